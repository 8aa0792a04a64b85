"""Shared plumbing for models that read text: which encoder, where its cache lives."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from warmstart.text import TextEncoder, encoder_from_name


class TextAware:
    """Mixin: a lazily built, cached text encoder named by the model config's `encoder` field.

    The encoder object and cache folder are runtime choices, not part of the saved config, so a
    saved model loads on another machine and uses that machine's cache.
    """

    _encoder: TextEncoder | None = None
    cache_dir: Path | None = None

    def set_encoder(self, encoder: TextEncoder) -> None:
        """Use this encoder object (e.g. one shared between models) instead of building one."""
        self._encoder = encoder

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            name = self.config.encoder  # type: ignore[attr-defined]
            self._encoder = encoder_from_name(name, cache_dir=self.cache_dir)
        return self._encoder

    def encode(self, texts: Sequence[str | None], show_progress: bool | None = None) -> np.ndarray:
        """Normalised embeddings; a missing or blank text gives a zero row."""
        clean = [t if t and t.strip() else "" for t in texts]
        if not clean:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.asarray(self.encoder.encode(clean, show_progress=show_progress), dtype=np.float32)
