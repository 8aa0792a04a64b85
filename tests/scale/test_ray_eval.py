"""`evaluate --engine ray`: every model a Ray task, with the results of a local run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import _cli, _write_data
from tests.eval.test_eval import three_models
from tests.synthetic import Synthetic
from warmstart.eval.runner import SegmentResult, run
from warmstart.eval.splits import cold_item_split
from warmstart.text import FrozenEncoder, HashingEncoder

pytestmark = pytest.mark.usefixtures("_environment")  # one BLAS thread, as a 1-CPU Ray task


def test_models_on_ray_give_the_local_runs_results(
    data: Synthetic, tmp_path: Path, ray_address: str | None
) -> None:
    split = cold_item_split(data.dataset, fraction=0.3, seed=0)
    specs = three_models(tmp_path)
    ds = data.dataset
    shipped = FrozenEncoder.of(HashingEncoder(), [*ds.item_text, *ds.user_text], "hashing")
    done: dict[str, list[str]] = {"local": [], "ray": []}
    results: dict[str, list[SegmentResult]] = {}
    for engine in ("local", "ray"):
        results[engine] = run(
            ds,
            split,
            specs,
            (5, 10),
            progress=False,
            n_bootstrap=200,
            on_model_done=lambda name, rs, e=engine: done[e].append(name),  # type: ignore[misc]
            engine=engine,
            address=ray_address if engine == "ray" else None,
            encoder=shipped,
        )
    assert done["local"] == ["random", "popularity", "warmstart"]
    assert sorted(done["ray"]) == sorted(done["local"])  # each once, as it finished
    local, on_ray = results["local"], results["ray"]
    assert [(r.model, r.segment) for r in on_ray] == [(r.model, r.segment) for r in local]
    for a, b in zip(local, on_ray, strict=True):
        assert a.metrics == b.metrics and a.ci95 == b.ci95 and a.p_value == b.p_value
        for name, values in a.per_user.items():
            np.testing.assert_array_equal(values, b.per_user[name])
    cold = {r.model: r for r in on_ray if r.segment == "cold"}
    assert cold["warmstart"].metrics["recall@10"] > cold["random"].metrics["recall@10"] + 0.2


def test_evaluate_command_runs_on_ray(tmp_path: Path, ray_address: str | None) -> None:
    _write_data(tmp_path)
    out = tmp_path / "results.json"
    args = [
        "evaluate",
        "--interactions",
        str(tmp_path / "ratings.csv"),
        "--items",
        str(tmp_path / "items.csv"),
        "--user-col",
        "user",
        "--rating-col",
        "stars",
        "--protocol",
        "cold-item",
        "--models",
        "popularity,content-knn",
        "--encoder",
        "hashing",
        "--bootstrap",
        "100",
        "--engine",
        "ray",
        "--output",
        str(out),
    ]
    if ray_address is not None:
        args += ["--address", ray_address]
    res = _cli(*args, cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["engine"] == "ray"
    cold = {r["model"]: r for r in payload["results"] if r["segment"] == "cold"}
    assert set(cold) == {"popularity", "content-knn"}
    assert cold["content-knn"]["metrics"]["auc"] > cold["popularity"]["metrics"]["auc"]
