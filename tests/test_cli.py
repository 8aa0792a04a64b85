"""The CLI end to end on small files: fit, save, recommend from the saved model, info, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

GROUPS = {
    "space": "rocket galaxy alien starship planet orbit astronaut",
    "romance": "love wedding kiss heart romance couple valentine",
}


def _write_data(folder: Path) -> None:
    items, inter = [], []
    for g, words in GROUPS.items():
        vocab = words.split()
        for j in range(12):
            items.append(
                {
                    "item_id": f"{g}-{j}",
                    "title": f"{g.title()} story {j}",
                    "blurb": " ".join(vocab[j % 7 :] + vocab[: j % 7]),
                }
            )
    for u in range(40):
        g = "space" if u % 2 == 0 else "romance"
        for j in range(6):
            inter.append({"user": u, "item_id": f"{g}-{(u + j) % 12}", "stars": 4 + (j % 2)})
    pd.DataFrame(items).to_csv(folder / "items.csv", index=False)
    pd.DataFrame(inter).to_csv(folder / "ratings.csv", index=False)


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WARMSTART_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


DATA_FLAGS = (
    "--interactions", "ratings.csv", "--items", "items.csv", "--user-col", "user",
    "--rating-col", "stars", "--item-text", "{title}. {blurb}",
)  # fmt: skip


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    _write_data(tmp_path)
    return tmp_path


def _flags(folder: Path) -> list[str]:
    return [str(folder / a) if a.endswith(".csv") else a for a in DATA_FLAGS]


def test_fit_then_recommend_from_saved_model(data: Path) -> None:
    model_dir = data / "model"
    res = _cli(
        "fit", *_flags(data), "--encoder", "hashing", "--output", str(model_dir), cache=data / "c"
    )
    assert res.returncode == 0, res.stderr
    assert (model_dir / "model.json").is_file()
    assert "chose lambda_items=" in res.stderr and "popularity_fade=" in res.stderr

    res = _cli(
        "recommend",
        "--model",
        str(model_dir),
        "--user",
        "0",
        "--k",
        "5",
        "--format",
        "json",
        cache=data / "c",
    )
    assert res.returncode == 0, res.stderr
    recs = json.loads(res.stdout)["recommendations"]
    assert len(recs) == 5
    assert set(recs[0]) == {"item_id", "title", "score", "explanation"}
    assert all(r["item_id"].startswith("space-") for r in recs[:3])
    assert all(isinstance(r["explanation"], str) and r["explanation"] for r in recs)

    res = _cli(
        "recommend", "--model", str(model_dir), "--profile", "love wedding kiss romance",
        "--k", "5", "--format", "json", cache=data / "c",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    recs = json.loads(res.stdout)["recommendations"]
    assert sum(r["item_id"].startswith("romance-") for r in recs) >= 4

    res = _cli(
        "similar",
        "--model",
        str(model_dir),
        "--item",
        "space-1",
        "--k",
        "3",
        "--format",
        "json",
        cache=data / "c",
    )
    assert res.returncode == 0, res.stderr
    similar = json.loads(res.stdout)["items"]
    assert [s["item_id"] for s in similar if s["item_id"] == "space-1"] == []
    assert len(similar) == 3

    res = _cli("recommend", "--model", str(model_dir), "--user", "0", "--k", "3", cache=data / "c")
    assert res.returncode == 0 and "top 3 for user 0" in res.stdout


def test_info_reports_counts(data: Path) -> None:
    res = _cli("info", *_flags(data), "--format", "json", cache=data / "c")
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["users"] == 40 and stats["items"] == 24 and stats["interactions"] == 240


def test_errors_are_one_clear_line(data: Path) -> None:
    res = _cli("recommend", "--model", str(data / "nope"), "--user", "1", cache=data / "c")
    assert res.returncode == 2
    assert "error:" in res.stderr and "nope" in res.stderr and "Traceback" not in res.stderr

    bad = data / "bad.csv"
    bad.write_text("user,item_id,stars\n1,space-0,5\n2,space-1,lots\n")
    res = _cli(
        "info", "--interactions", str(bad), "--items", str(data / "items.csv"),
        "--user-col", "user", "--rating-col", "stars", cache=data / "c",
    )  # fmt: skip
    assert res.returncode == 2
    assert "bad.csv" in res.stderr and "line 3" in res.stderr and "stars" in res.stderr

    res = _cli("recommend", "--dataset", "no-such-data", "--user", "1", cache=data / "c")
    assert res.returncode == 2 and "unknown dataset" in res.stderr

    model_dir = data / "m"
    assert (
        _cli(
            "fit",
            *_flags(data),
            "--encoder",
            "hashing",
            "--output",
            str(model_dir),
            cache=data / "c",
        ).returncode
        == 0
    )
    res = _cli("recommend", "--model", str(model_dir), "--user", "no-such-user", cache=data / "c")
    assert res.returncode == 2 and "no-such-user" in res.stderr


def test_finetune_writes_encoder_and_resumes(data: Path) -> None:
    pytest.importorskip("peft")
    out = data / "ft"
    args = ("finetune", *_flags(data), "--output", str(out), "--batch-size", "8")
    res = _cli(*args, "--epochs", "1", cache=data / "c")
    assert res.returncode == 0, res.stderr
    assert "best epoch" in res.stdout
    for name in ("encoder.npz", "encoder.json", "learning_curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "checkpoint" / "trainer.json").read_text())["epoch"] == 1
    assert (out / "onnx" / "model.int8.onnx").is_file()
    # The exported int8 encoder serves any text-aware model, without torch at encoding time.
    res = _cli(
        "fit", *_flags(data), "--encoder", f"onnx:{out / 'onnx'}", "--output", str(data / "m"),
        cache=data / "c",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    config = json.loads((data / "m" / "model.json").read_text())["config"]
    assert config["encoder"] == f"onnx:{out / 'onnx'}"
    # Resuming a finished run with the same settings is a no-op that still writes the encoder.
    res = _cli(*args, "--epochs", "1", "--resume", cache=data / "c")
    assert res.returncode == 0, res.stderr
    assert "resuming after epoch 1" in res.stderr
    # Other settings cannot resume this checkpoint, and a bad choice is one clear line.
    res = _cli(*args, "--epochs", "1", "--seed", "3", "--resume", cache=data / "c")
    assert res.returncode == 2 and "other fine-tuning settings" in res.stderr
    res = _cli(*args, "--method", "adapters", cache=data / "c")
    assert res.returncode == 2 and "method" in res.stderr
