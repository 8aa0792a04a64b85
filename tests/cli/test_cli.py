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


# ---- in-process: the shared data options, and which errors are clean --------------------------

DATA_COMMANDS = ("fit", "recommend", "similar", "info", "evaluate", "finetune")
DATA_OPTIONS = {
    "--dataset": None,
    "--data-dir": None,
    "--interactions": None,
    "--items": None,
    "--users": None,
    "--user-col": "user_id",
    "--item-col": "item_id",
    "--rating-col": None,
    "--min-rating": None,
    "--timestamp-col": None,
    "--item-text": None,
    "--user-text": None,
}


def _options(command: str) -> dict[str, tuple[object, str | None]]:
    import typer.main

    from warmstart.cli.main import app

    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return {p.opts[0]: (p.default, getattr(p, "help", None)) for p in params}


def test_every_data_command_takes_the_same_data_options() -> None:
    first = {k: v for k, v in _options("fit").items() if k in DATA_OPTIONS}
    assert {k: default for k, (default, _) in first.items()} == DATA_OPTIONS
    for command in DATA_COMMANDS:
        shared = {k: v for k, v in _options(command).items() if k in DATA_OPTIONS}
        assert shared == first, command
    assert "--dataset" not in _options("serve") and "--dataset" not in _options("retrain")
    assert set(_options("demo")) & set(DATA_OPTIONS) == {"--data-dir"}


@pytest.mark.parametrize(
    "command",
    [
        "fit",
        "recommend",
        "similar",
        "info",
        "evaluate",
        "finetune",
        "serve",
        "retrain",
        "encode",
        "demo",
    ],
)
def test_help_renders(command: str) -> None:
    from typer.testing import CliRunner

    from warmstart.cli.main import app

    res = CliRunner().invoke(app, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert ("--min-rating" in res.output) == (command in DATA_COMMANDS)
    assert ("warmstart[ray]" in res.output) == (command in ("fit", "evaluate", "encode"))


def test_evaluate_help_lists_every_default_model_at_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from warmstart.cli.evaluate import DEFAULT_MODELS
    from warmstart.cli.main import app

    monkeypatch.setenv("COLUMNS", "80")
    res = CliRunner().invoke(app, ["evaluate", "--help"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    flat = " ".join(line.strip("│ ") for line in lines)
    for model in DEFAULT_MODELS:
        assert model in flat, f"{model!r} cut from the help"


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the console entry point in this process; its exit code (0 when it returns)."""
    from warmstart.cli.main import main

    monkeypatch.setattr(sys, "argv", ["warmstart", *args])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer installs its own
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_info_filters_by_min_rating(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # info gained --min-rating with the shared options: half the ratings are 5, half 4.
    assert _main(monkeypatch, "info", *_flags(data), "--min-rating", "5", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 120


def test_bad_input_is_one_clean_line(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(data)
    cases = [
        (("info", *flags, "--format", "xml"), "--format must be table or json"),
        (("info", "--dataset", "ml-100k", *flags), "either --dataset or --interactions"),
        (("info", "--bogus"), "No such option: --bogus"),
        (("similar", *flags, "--item", "space-1", "--text", "rockets"), "exactly one of"),
        (("fit", *flags, "--encoder", "bogus", "--output", str(data / "m")), "unknown encoder"),
        (("evaluate", *flags, "--protocol", "sideways"), "unknown --protocol"),
        (("evaluate", *flags, "--protocol", "warm", "--k", "ten"), "--k takes comma-separated"),
        (
            ("evaluate", *flags, "--protocol", "cold-item", "--cold-items", str(data / "no.txt")),
            "no.txt: no such file",
        ),
        (("serve", "--model", str(data), "--api-key", "k", "--log-level", "loud"), "--log-level"),
        (("finetune", *flags, "--output", str(data / "ft"), "--method", "adapters"), "--method:"),
        (("finetune", *flags, "--output", str(data / "ft"), "--resume"), "nothing to resume"),
    ]
    for args, message in cases:
        assert _main(monkeypatch, *args) == 2, args
        stderr = capsys.readouterr().err
        assert message in " ".join(stderr.split()), (args, stderr)
        assert "Traceback" not in stderr


def test_resume_with_other_settings_fails_before_training(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = data / "ft" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer.json").write_text(json.dumps({"config": {"epochs": 7}}))
    args = ("finetune", *_flags(data), "--output", str(data / "ft"), "--resume")
    assert _main(monkeypatch, *args) == 2
    assert "other fine-tuning settings" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from warmstart.cli.data_options import DataSpec
    from warmstart.cli.main import app

    def broken(self: DataSpec) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(DataSpec, "load", broken)
    res = CliRunner().invoke(app, ["info", *_flags(data)])
    assert isinstance(res.exception, RuntimeError) and str(res.exception) == "a bug"
    with pytest.raises(RuntimeError, match="a bug"):
        _main(monkeypatch, "info", *_flags(data))

    def plain_value_error(self: DataSpec) -> None:
        raise ValueError("not a WarmstartError")

    monkeypatch.setattr(DataSpec, "load", plain_value_error)
    with pytest.raises(ValueError, match="not a WarmstartError"):
        _main(monkeypatch, "info", *_flags(data))
