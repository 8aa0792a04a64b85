"""Shared plumbing for models that read text: which encoder, where its cache lives."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from warmstart.models.arrays import standardise
from warmstart.text import TextEncoder, encoder_from_name


class TextAware:
    """Mixin: a lazily built, cached text encoder named by the model config's `encoder` field.

    The encoder object and cache folder are runtime choices, not part of the saved config, so a
    saved model loads on another machine and uses that machine's cache.
    """

    _encoder: TextEncoder | None = None
    cache_dir: Path | None = None
    item_embeddings: np.ndarray  # normalised item text embeddings, set by the model's fit
    _last_text: tuple[str, np.ndarray] | None = None

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

    def _text_similarity(self, text: str | None, item: int) -> float | None:
        """Cosine of a user's text and an item's text, for explanations (None without text).

        The last text's embedding is kept: explaining a list of items asks about one text
        again and again.
        """
        if not text or not np.any(self.item_embeddings[item]):
            return None
        memo = self._last_text
        if memo is None or memo[0] != text:
            memo = (text, self.encode([text])[0])
            self._last_text = memo
        return float(memo[1] @ self.item_embeddings[item])

    def _with_text_match(self, scores: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """Model scores plus `text_weight` times direct text similarity, both standardised."""
        weight = self.config.text_weight  # type: ignore[attr-defined]
        return standardise(scores) + weight * standardise(emb @ self.item_embeddings.T)
