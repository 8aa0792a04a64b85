"""Visitors' sentences on int8 ONNX MiniLM: only where it agrees with fp32 and is faster."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import CF, Synthetic
from warmstart.models.hybrid import WarmStartRecommender
from warmstart.serve.engine import Engine
from warmstart.serve.queries import MIN_COSINE, compare, query_encoder
from warmstart.text import HashingEncoder
from warmstart.text.encoders import MiniLMEncoder
from warmstart.text.onnx_encoder import OnnxEncoder

pytestmark = pytest.mark.usefixtures("_environment")


class _Tilted:
    """A hashing encoder whose vectors lean towards one fixed direction."""

    def __init__(self, dim: int, tilt: float) -> None:
        self.inner, self.name, self.dim = HashingEncoder(dim), f"tilted-{dim}", dim
        self.direction = np.eye(dim, dtype=np.float32)[0] * tilt

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return np.asarray(self.inner.encode(texts) + self.direction, dtype=np.float32)


def test_compare_finds_the_text_that_disagrees_most() -> None:
    texts = [f"text number {j} about topic {j % 3}" for j in range(12)]
    same = compare(HashingEncoder(64), HashingEncoder(64), texts)
    assert same.texts == 12 and same.min_cosine == pytest.approx(1.0, abs=1e-6)
    tilted = compare(HashingEncoder(64), _Tilted(64, 0.5), texts)
    assert tilted.min_cosine < 0.95 and tilted.reference_s > 0 and tilted.candidate_s > 0


def test_only_minilm_models_get_an_int8_query_encoder(data: Synthetic, tmp_path: Path) -> None:
    hashing = WarmStartRecommender(encoder="hashing", cf=CF).fit(data.dataset)
    assert query_encoder(hashing, "auto", tmp_path) is None
    assert not (tmp_path / "onnx").exists()


def test_a_minilm_model_encodes_visitors_with_int8(data: Synthetic, tmp_path: Path) -> None:
    model = WarmStartRecommender(cf=CF).fit(data.dataset)  # MiniLM, the default encoder
    assert query_encoder(model, "fp32", tmp_path) is None
    fast = query_encoder(model, "auto", tmp_path)
    assert isinstance(fast, OnnxEncoder) and "int8" in fast.name
    (folder,) = [p for p in (tmp_path / "onnx").iterdir() if p.is_dir()]
    written = (folder / "model.int8.onnx").stat().st_mtime_ns
    again = query_encoder(model, "auto", tmp_path)  # exported once, then loaded
    assert isinstance(again, OnnxEncoder)
    assert (folder / "model.int8.onnx").stat().st_mtime_ns == written
    sentences = [data.group_text(g, seed=s) for g in range(2) for s in range(5)]
    reference = MiniLMEncoder().encode(sentences)
    cos = (reference * fast.encode(sentences)).sum(1)
    assert cos.min() >= MIN_COSINE
    # In the engine: visitors' sentences go to int8, the catalogue's items stay fp32.
    engine = Engine(model, query_encoder=fast)
    assert engine.text_cache.queries is fast
    ranked = engine.recommend_profile(sentences[0], None, [])
    assert len(ranked.item_ids) > 0


def test_a_service_decides_once_per_encoder(
    data: Synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warmstart.serve import queries

    calls: list[str] = []
    real = queries.query_encoder

    def counted(model: object, mode: queries.QueryEncoding, cache_dir: Path) -> object:
        calls.append(model.encoder.name)  # type: ignore[attr-defined]
        return real(model, mode, cache_dir)  # type: ignore[arg-type]

    monkeypatch.setattr(queries, "query_encoder", counted)
    first = WarmStartRecommender(encoder="hashing", cf=CF).fit(data.dataset)
    reloaded = WarmStartRecommender(encoder="hashing", cf=CF, lambda_items=3.0).fit(data.dataset)
    chooser = queries.QueryEncoders("auto", tmp_path)
    assert chooser.for_model(first) is None and chooser.for_model(reloaded) is None
    assert len(calls) == 1  # the reload reused the first verdict
