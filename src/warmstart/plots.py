"""Figures outside pyplot, written atomically: shared by the evaluation report and fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from warmstart._io import atomic_open

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def figure(width: float, height: float) -> Figure:
    """A figure bound to the Agg canvas, outside pyplot: nothing global to switch or close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write `fig` to `path` as PNG through a temporary file, then free it."""
    with atomic_open(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    fig.clear()
    return path
