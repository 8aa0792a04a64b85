"""Evaluation: the splits keep test data out of training, the runner measures honestly, and
`warmstart evaluate` runs end to end on data given as files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import Synthetic, make_synthetic
from warmstart.data import from_frames
from warmstart.errors import DataError
from warmstart.eval.runner import ModelSpec, run
from warmstart.eval.splits import (
    cold_item_split,
    cold_user_split,
    read_id_file,
    warm_split,
)
from warmstart.registry import MODELS

pytestmark = pytest.mark.usefixtures("_environment")  # tests/conftest.py


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return make_synthetic(seed=0)


def _timed(data: Synthetic):  # type: ignore[no-untyped-def]
    """The synthetic data with a timestamp per interaction (row order = time)."""
    frame = data.interactions.assign(ts=np.arange(len(data.interactions)) * 10)
    return from_frames(
        frame,
        data.items,
        data.users,
        rating_col="rating",
        timestamp_col="ts",
        item_text="{title}. {text}",
        user_text="{bio}",
        name="synthetic",
    )


# ---- splits -----------------------------------------------------------------------------
def test_cold_item_split_keeps_test_items_out_of_training(data: Synthetic) -> None:
    ds = data.dataset
    split = cold_item_split(ds, fraction=0.2, seed=3)
    cold, everything = split.segments
    assert (cold.name, everything.name) == ("cold", "all")
    assert cold.candidates is not None
    assert split.train.item_counts()[cold.candidates].sum() == 0
    # every test interaction of a test item is in the truth, and only those
    full = ds.matrix()
    expected = full[:, cold.candidates].nnz
    assert cold.truth.nnz == expected
    assert set(np.unique(cold.truth.indices)) <= set(cold.candidates.tolist())
    # the validation items are held out too, and are not tested
    n_active = int((ds.item_counts() > 0).sum())
    assert (split.train.item_counts() > 0).sum() < n_active - len(cold.candidates)
    # training interactions are excluded from ranking
    seen = split.train.matrix()
    assert (everything.exclude != (seen[everything.users] > 0)).nnz == 0


def test_cold_item_split_is_reproducible(data: Synthetic) -> None:
    a = cold_item_split(data.dataset, seed=1).segments[0].candidates
    b = cold_item_split(data.dataset, seed=1).segments[0].candidates
    c = cold_item_split(data.dataset, seed=2).segments[0].candidates
    assert a is not None and b is not None and c is not None
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cold_user_split_reveals_earliest_items(data: Synthetic) -> None:
    ds = _timed(data)
    split = cold_user_split(ds, fewshot=(0, 1, 3), seed=0)
    names = [s.name for s in split.segments]
    assert names == ["zero-shot", "fewshot-1", "fewshot-3"]
    test_users = split.segments[0].users
    assert split.train.user_counts()[test_users].sum() == 0
    three = split.segments[2]
    assert three.revealed is not None
    for row, u in enumerate(three.users):
        mine = np.flatnonzero(ds.users == u)
        earliest = ds.items[mine[np.argsort(ds.timestamps[mine])][:3]]  # type: ignore[index]
        assert set(three.revealed[row]) == set(earliest)
        truth = set(three.truth[row].indices)
        assert truth.isdisjoint(three.revealed[row])
        assert truth | set(earliest) == set(ds.items[mine])
        assert set(three.exclude[row].indices) == set(earliest)
    zero = split.segments[0]
    assert zero.revealed is not None and all(len(r) == 0 for r in zero.revealed)


def test_warm_split_proportions_and_temporal_order(data: Synthetic) -> None:
    ds = _timed(data)
    split = warm_split(ds, seed=0)
    assert split.train.n_interactions == pytest.approx(0.8 * ds.n_interactions, rel=0.1)
    seg = split.segments[0]
    assert (seg.truth.multiply(split.train.matrix()[seg.users])).nnz == 0
    temporal = warm_split(ds, temporal=True)
    assert temporal.train.timestamps is not None
    t = temporal.segments[0]
    # every test interaction is later than every training interaction
    last_train = temporal.train.timestamps.max()
    test_rows = np.flatnonzero(ds.timestamps > last_train)  # type: ignore[operator]
    assert t.truth.nnz <= len(test_rows)


def test_temporal_needs_timestamps(data: Synthetic) -> None:
    with pytest.raises(DataError, match="timestamps"):
        warm_split(data.dataset, temporal=True)


def test_cold_items_file_errors_name_the_line(data: Synthetic, tmp_path: Path) -> None:
    path = tmp_path / "cold.txt"
    first = data.dataset.item_ids.to_external([0])[0]
    path.write_text(f"{first}\n\nnot-an-item\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_id_file(path, data.dataset)
    assert info.value.line == 3 and "not-an-item" in str(info.value)
    path.write_text(f"{first}\n", encoding="utf-8")
    assert read_id_file(path, data.dataset).tolist() == [0]


# ---- runner -----------------------------------------------------------------------------
def three_models(cache: Path) -> list[ModelSpec]:
    """Random, popularity and a small warmstart (hashing encoder): the runner's test models."""
    cf = {"factors": 16, "iterations": 10, "num_threads": 1}
    return [
        ModelSpec("random", lambda: MODELS["random"]()),
        ModelSpec("popularity", lambda: MODELS["popularity"]()),
        ModelSpec(
            "warmstart",
            lambda: MODELS["warmstart"](cache_dir=cache, encoder="hashing", cf=cf),  # type: ignore[call-arg]
        ),
    ]


def test_runner_ranks_models_honestly(data: Synthetic, tmp_path: Path) -> None:
    """On the synthetic groups, a text-aware model beats random and popularity on cold items."""
    split = cold_item_split(data.dataset, fraction=0.3, seed=0)
    specs = three_models(tmp_path)
    results = run(data.dataset, split, specs, (5, 10), progress=False, n_bootstrap=200)
    cold = {r.model: r for r in results if r.segment == "cold"}
    assert set(cold) == {"random", "popularity", "warmstart"}
    ws, rnd = cold["warmstart"], cold["random"]
    assert ws.metrics["recall@10"] > rnd.metrics["recall@10"] + 0.2
    lo, hi = ws.ci95["recall@10"]
    assert lo <= ws.metrics["recall@10"] <= hi
    assert ws.best_other["recall@10"] in {"random", "popularity"}
    assert ws.p_value["recall@10"] is not None and ws.p_value["recall@10"] < 0.05
    # popularity cannot tell cold items apart: all tied, so it is no better than random
    assert cold["popularity"].metrics["auc"] == pytest.approx(0.5, abs=1e-9)
    assert ws.metrics["auc"] > 0.8
    assert {"rmse", "mae"} <= set(ws.metrics)  # the synthetic data has ratings
    assert ws.fit_seconds > 0 and ws.recommend_seconds > 0
    assert json.dumps([r.to_dict() for r in results])  # serialisable


# ---- the command, end to end on files ----------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WARMSTART_CACHE_DIR": str(cwd / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture()
def files(data: Synthetic, tmp_path: Path) -> Path:
    inter = data.interactions.rename(columns={"user_id": "uid", "item_id": "iid"})
    inter = inter.assign(when=np.random.default_rng(0).permutation(len(inter)))
    inter.to_csv(tmp_path / "events.csv", index=False)
    data.items.rename(columns={"item_id": "iid"}).to_csv(tmp_path / "items.csv", index=False)
    data.users.rename(columns={"user_id": "uid"}).to_csv(tmp_path / "users.csv", index=False)
    return tmp_path


FILE_FLAGS = (
    "--interactions", "events.csv", "--items", "items.csv", "--users", "users.csv",
    "--user-col", "uid", "--item-col", "iid", "--rating-col", "rating",
    "--timestamp-col", "when", "--item-text", "{title}. {text}", "--user-text", "{bio}",
    "--encoder", "hashing", "--bootstrap", "200",
)  # fmt: skip


@pytest.mark.parametrize(
    ("protocol", "segments"),
    [
        ("cold-item", {"cold", "all"}),
        ("cold-user", {"zero-shot", "fewshot-1", "fewshot-3"}),
        ("warm", {"warm"}),
        ("temporal", {"temporal"}),
    ],
)
def test_evaluate_command_on_files(files: Path, protocol: str, segments: set[str]) -> None:
    models = "random,popularity,als,item-knn,content-knn,warmstart"
    extra = ["--fewshot", "0,1,3"] if protocol == "cold-user" else []
    res = _cli(
        "evaluate", "--protocol", protocol, "--models", models, "--k", "5,10",
        "--output", "out/results.json", *extra, *FILE_FLAGS, cwd=files,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads((files / "out" / "results.json").read_text())
    assert payload["protocol"] == protocol and payload["dataset"] == "events"
    assert {r["segment"] for r in payload["results"]} == segments
    assert {r["model"] for r in payload["results"]} == set(models.split(","))
    first = payload["results"][0]
    assert {"recall@10", "ndcg@5", "precision@10", "hitrate@10", "mrr@10", "map@10", "auc"} <= set(
        first["metrics"]
    )
    assert "fit_seconds" in first and "recommend_seconds" in first and "ci95" in first
    pngs = sorted(p.name for p in (files / "out").glob("*.png"))
    assert "results-metrics-at-k.png" in pngs and "results-segments.png" in pngs
    assert ("results-fewshot.png" in pngs) == (protocol == "cold-user")
    assert "| model" in res.stdout  # the Markdown table


def test_evaluate_command_errors(files: Path) -> None:
    res = _cli("evaluate", "--protocol", "sideways", *FILE_FLAGS, cwd=files)
    assert res.returncode == 2 and "--protocol" in res.stderr
    res = _cli("evaluate", "--protocol", "warm", "--models", "als,nope", *FILE_FLAGS, cwd=files)
    assert res.returncode == 2 and "nope" in res.stderr
    res = _cli(
        "evaluate", "--protocol", "cold-item", "--split", "dropoutnet", *FILE_FLAGS, cwd=files
    )
    assert res.returncode == 2 and "citeulike-a" in res.stderr
    res = _cli("evaluate", "--protocol", "warm", "--k", "10,x", *FILE_FLAGS, cwd=files)
    assert res.returncode == 2 and "--k" in res.stderr


def test_cold_items_file_on_the_command_line(files: Path, data: Synthetic) -> None:
    cold = [i for i in data.items["item_id"] if i not in data.cold_item_ids][:6]
    (files / "cold.txt").write_text("\n".join(cold) + "\n", encoding="utf-8")
    res = _cli(
        "evaluate", "--protocol", "cold-item", "--cold-items", "cold.txt",
        "--models", "popularity,content-knn", "--output", "r.json", *FILE_FLAGS, cwd=files,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads((files / "r.json").read_text())
    assert payload["segments"]["cold"]["n_users"] > 0
    assert pd.Series([r["model"] for r in payload["results"]]).nunique() == 2
