"""Progress bars that suit where they are read: redrawn freely on a terminal, and at most every
30 seconds when stderr is a file or a pipe (a log, CI), so a long run writes a handful of
lines there instead of hundreds."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

LOG_INTERVAL = 30.0  # seconds between updates written to a log


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """`tqdm.auto.tqdm` with the update interval chosen by where stderr goes."""
    from tqdm.auto import tqdm as _tqdm

    if not _is_terminal():
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return _tqdm(*args, **kwargs)


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


@contextlib.contextmanager
def no_third_party_bars() -> Iterator[None]:
    """Load a model without transformers' own bar ("Loading weights"): a command shows its
    own progress, not a library's. Restores the setting after."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
