"""`warmstart finetune`: its settings from the options, the checks before training, the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from warmstart.cli.configs import build_config
from warmstart.data import Dataset
from warmstart.finetune import FineTuneConfig, FineTuneResult
from warmstart.finetune import finetune as run_finetune
from warmstart.finetune.export import export_onnx

OPTIONS: dict[str, str] = {
    "objective": "--objective",
    "method": "--method",
    "layers": "--layers",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "batch_size": "--batch-size",
    "learning_rate": "--lr",
    "mlm_epochs": "--mlm-epochs",
    "hard_negatives": "--hard-negatives",
    "seed": "--seed",
}


def finetune_config(**given: Any) -> FineTuneConfig:
    """The options the user gave over `FineTuneConfig`'s defaults (None: not given)."""
    return build_config(FineTuneConfig, {k: v for k, v in given.items() if v is not None}, OPTIONS)


def train(
    data: Dataset, cfg: FineTuneConfig, output: Path, *, resume: bool, console: Console
) -> FineTuneResult:
    """Fine-tune; Ctrl-C exits 130, saying the last finished epoch's checkpoint is intact."""
    console.print(
        f"[dim]{data.name}: {data.n_items:,} items, {data.n_interactions:,} interactions; "
        f"{cfg.objective} fine-tuning with {cfg.method}[/dim]"
    )
    try:
        return run_finetune(
            data,
            cfg,
            output=output,
            resume=resume,
            progress=console.is_terminal,
            say=lambda line: console.print(f"[dim]{line}[/dim]", highlight=False),
        )
    except KeyboardInterrupt:
        console.print(
            f"interrupted: the last finished epoch's checkpoint in {output} is intact; "
            "go on with the same command and --resume"
        )
        raise typer.Exit(130) from None


def export(result: FineTuneResult, output: Path) -> str:
    """Export the encoder for `--encoder onnx:DIR`; the summary line that says where it went."""
    onnx_dir = export_onnx(result.tower, output / "onnx")
    return (
        f"fine-tuned in {result.seconds:.0f} s; best epoch {result.best_epoch} "
        f"(validation recall {result.best_recall:.4f}); encoder, history and learning "
        f"curves in {output}; use it with --encoder onnx:{onnx_dir}"
    )
