"""The encoder of the sentences a service meets at request time (visitors' queries, users'
descriptions): MiniLM as int8 ONNX where that is faster and agrees with the model's encoder.

A visitor with a sentence nobody has sent before waits for it to be encoded: with torch's fp32
MiniLM that capped such visitors at about 23 requests/s on 2 cores (BENCHMARKS.md). The int8
export of the same weights (`warmstart.finetune.export`, the path `warmstart-ft` models
already take) is several times faster. It is used only for these sentences; catalogue items are
still encoded by the model's own encoder, so every item vector stays exactly what a fit or a
restart computes. Before it is used, both encoders encode a sample of the model's own texts one
at a time, as visitors arrive: int8 must keep every one within cosine `MIN_COSINE` of fp32 and
be faster, or the service logs why and keeps fp32.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from warmstart.errors import WarmstartError
from warmstart.models.servable import ServableModel
from warmstart.text.cache import CachedEncoder
from warmstart.text.core import MissingDependencyError, TextEncoder
from warmstart.text.encoders import MiniLMEncoder

log = logging.getLogger("warmstart.serve")

QueryEncoding = Literal["auto", "fp32"]
MIN_COSINE = 0.99
PROBES = 48  # sample texts the check encodes with both encoders


@dataclass(frozen=True)
class Agreement:
    """How two encoders compare on the same texts, one text per call."""

    texts: int
    min_cosine: float
    reference_s: float  # seconds per text, the model's encoder
    candidate_s: float  # seconds per text, the faster one

    @property
    def speedup(self) -> float:
        return self.reference_s / self.candidate_s if self.candidate_s > 0 else float("inf")


def query_encoder(model: ServableModel, mode: QueryEncoding, cache_dir: Path) -> TextEncoder | None:
    """The encoder for request-time sentences; None: the model's own.

    `auto` tries int8 ONNX for a model that encodes with the packaged MiniLM (other encoders,
    and `warmstart-ft`'s already int8 one, are left alone); `fp32` never does.
    """
    if mode == "fp32":
        return None
    own = model.encoder
    base = own.encoder if isinstance(own, CachedEncoder) else own
    if not isinstance(base, MiniLMEncoder):
        return None
    try:
        from warmstart.finetune.export import base_onnx
        from warmstart.text.onnx_encoder import OnnxEncoder

        fast = OnnxEncoder(base_onnx(cache_dir), threads=1)
    except (MissingDependencyError, WarmstartError, OSError) as exc:
        log.warning("visitors' sentences stay on fp32 MiniLM: no int8 ONNX encoder (%s)", exc)
        return None
    texts = _probes(model)
    agreement = compare(base, fast, texts)
    verdict = (
        f"{agreement.texts} of the model's texts: min cosine {agreement.min_cosine:.4f}, "
        f"{agreement.speedup:.1f}x faster"
    )
    if agreement.min_cosine < MIN_COSINE or agreement.speedup <= 1.0:
        log.warning("visitors' sentences stay on fp32 MiniLM: int8 ONNX on %s", verdict)
        return None
    log.info("visitors' sentences are encoded by int8 ONNX MiniLM (%s)", verdict)
    return fast


class QueryEncoders:
    """A service's choice of request-time encoder, made once per model encoder.

    The export and the agreement check cost seconds (an ONNX session, 48 texts encoded twice);
    they are a property of the encoder pair, not of one model folder, so a reload or an
    experiment arm on the same encoder reuses the first verdict and its ONNX session.
    """

    def __init__(self, mode: QueryEncoding, cache_dir: Path) -> None:
        self.mode, self.cache_dir = mode, cache_dir
        self._chosen: dict[str, TextEncoder | None] = {}
        self._lock = threading.Lock()

    def for_model(self, model: ServableModel) -> TextEncoder | None:
        """The encoder for `model`'s request-time sentences (None: the model's own)."""
        own = model.encoder
        key = (own.encoder if isinstance(own, CachedEncoder) else own).name
        with self._lock:
            if key not in self._chosen:
                self._chosen[key] = query_encoder(model, self.mode, self.cache_dir)
            return self._chosen[key]


def compare(reference: TextEncoder, candidate: TextEncoder, texts: Sequence[str]) -> Agreement:
    """Encode each text alone with both (after one warm-up each) and compare."""
    reference.encode(["warm-up"], show_progress=False)
    candidate.encode(["warm-up"], show_progress=False)
    vectors, seconds = [], []
    for encoder in (reference, candidate):
        start = time.perf_counter()
        rows = [encoder.encode([t], show_progress=False)[0] for t in texts]
        seconds.append((time.perf_counter() - start) / max(len(texts), 1))
        vectors.append(np.asarray(rows, dtype=np.float32))
    a, b = vectors
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return Agreement(len(texts), float(cos.min()) if len(cos) else 1.0, seconds[0], seconds[1])


def _probes(model: ServableModel) -> list[str]:
    """Up to `PROBES` non-empty texts of the model, spread over its items and users."""
    cat = model.catalogue
    texts = [t for t in (*cat.item_text, *cat.user_text) if t and t.strip()]
    if len(texts) <= PROBES:
        return texts
    picks = np.linspace(0, len(texts) - 1, PROBES).astype(int)
    return [texts[i] for i in picks]
