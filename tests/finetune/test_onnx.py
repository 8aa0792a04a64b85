"""The int8 ONNX encoder: exported from a (fine-tuned) tower, it encodes like the tower does.

One untrained tower is exported once for the module (about 10 s); the warmstart-ft tests fit
one small model and share it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydantic
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("peft")

from tests.synthetic import Synthetic, make_clustered, make_synthetic
from warmstart.finetune import FineTuneConfig, FineTunedEncoder, TextTower, finetune
from warmstart.finetune import recommender as finetuned_module
from warmstart.finetune.export import export_onnx
from warmstart.finetune.recommender import WarmStartFTRecommender
from warmstart.models import Recommender
from warmstart.text import MissingDependencyError
from warmstart.text.cache import CachedEncoder
from warmstart.text.onnx_encoder import INT8_RECIPE, OnnxEncoder

# Short and long, several languages and scripts, lists, numbers, shouting, one blank.
TEXTS = [
    "A quiet film about a lighthouse keeper and the sea.",
    "",
    "Graph neural networks for predicting molecular properties. " * 12,
    "romance, comedy",
    "x",
    "Dynamo: a transparent dynamic optimization system",
    "Un film silencieux sur un gardien de phare et la mer, tourné en Bretagne.",
    "Ein Roman über Erinnerung, Exil und den Wiederaufbau einer Familie nach dem Krieg.",
    "Исследование устойчивости нейронных сетей к шуму во входных данных.",
    "深層学習による画像認識の研究と応用",
    "iPhone 15 Pro, 256 GB — 6.1-inch display, USB-C, 48 MP camera, $999.",
    "WHY IS THE SKY BLUE??? Rayleigh scattering, explained for kids!!!",
    "Sparse matrix factorisation; implicit feedback; alternating least squares; cold start.",
    "We propose a method that maps item descriptions into the latent space of collaborative "
    "filtering so that items nobody has rated can be recommended. On citation and movie data "
    "it outperforms content-only baselines, in particular for users with short histories, and "
    "it costs one matrix product per new item at serving time. " * 3,
]
NONBLANK = [i for i, t in enumerate(TEXTS) if t.strip()]
FT_PARAMS = {"finetune": {"max_steps": 3, "batch_size": 16, "validation_fraction": 0.0}}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.fixture(scope="module")
def tower() -> TextTower:
    return TextTower(FineTuneConfig())


@pytest.fixture(scope="module")
def folder(tower: TextTower, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tower, tmp_path_factory.mktemp("export") / "onnx")


@pytest.fixture(scope="module")
def reference(tower: TextTower) -> np.ndarray:
    return tower.encode(TEXTS)


def test_fp32_export_matches_the_tower(folder: Path, reference: np.ndarray) -> None:
    fp32 = OnnxEncoder(folder, int8=False).encode(TEXTS)
    assert not np.any(fp32[1])  # blank text: zero row, as everywhere
    assert np.allclose(_cosines(fp32, reference)[NONBLANK], 1.0, atol=1e-4)


def test_int8_stays_within_099_of_the_tower_text_by_text(
    folder: Path, reference: np.ndarray
) -> None:
    int8 = OnnxEncoder(folder).encode(TEXTS)
    assert not np.any(int8[1])
    cos = _cosines(int8, reference)[NONBLANK]
    assert cos.min() >= 0.99, dict(zip(NONBLANK, cos.round(4).tolist(), strict=True))


def test_int8_vectors_do_not_depend_on_the_batch(folder: Path) -> None:
    # activation ranges are fixed at export: a cached vector equals a freshly computed one
    encoder = OnnxEncoder(folder)
    together = encoder.encode(TEXTS)
    alone = np.vstack([encoder.encode([t]) for t in TEXTS])
    assert np.allclose(alone, together, atol=1e-6)
    assert np.allclose(encoder.encode(TEXTS[::-1], batch_size=3)[::-1], together, atol=1e-6)


def test_int8_names_sizes_and_metadata(folder: Path) -> None:
    int8, fp32 = OnnxEncoder(folder), OnnxEncoder(folder, int8=False)
    assert int8.name.endswith(f"+onnx-int8-{INT8_RECIPE}")
    assert fp32.name.endswith("+onnx-fp32")
    # int8 MatMul weights; the token embedding table (a Gather) stays fp32
    assert (folder / "model.int8.onnx").stat().st_size < 0.7 * (
        folder / "model.onnx"
    ).stat().st_size
    meta = json.loads((folder / "encoder.onnx.json").read_text())
    assert meta["int8"]["fused"]["Attention"] == 6  # the optimizer recognised every layer
    assert meta["int8"]["smoothed_inputs"] == 12 and meta["int8"]["fp32_gelu_units"] > 0
    assert meta["int8"]["static_activation_ranges"] > 0
    assert meta["int8"]["calibration_min_cosine"] >= 0.99


def test_a_fine_tuned_tower_exports_with_its_adapters_merged(tmp_path: Path) -> None:
    ds, _ = make_clustered()
    cfg = FineTuneConfig(max_steps=3, batch_size=8, learning_rate=3e-3, validation_fraction=0.0)
    tuned = finetune(ds, cfg, progress=False).tower
    untrained = TextTower(cfg)
    texts = ds.item_texts()[:6]
    assert not np.allclose(tuned.encode(texts), untrained.encode(texts), atol=1e-4)
    folder = export_onnx(tuned, tmp_path / "onnx")
    exported = OnnxEncoder(folder, int8=False).encode(texts)
    assert np.allclose(exported, tuned.encode(texts), atol=1e-4)
    assert _cosines(OnnxEncoder(folder).encode(texts), tuned.encode(texts)).min() >= 0.99


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"encoder\.onnx\.json"):
        OnnxEncoder(tmp_path)


# ---- warmstart-ft -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Loaded models use the default cache: keep it in tmp."""
    path = tmp_path_factory.mktemp("embedding-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WARMSTART_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return make_synthetic(seed=0)


@pytest.fixture(scope="module")
def fitted(data: Synthetic, cache: Path) -> WarmStartFTRecommender:
    return WarmStartFTRecommender(cache_dir=cache, **FT_PARAMS).fit(data.dataset)


def test_warmstart_ft_encodes_with_int8_onnx_by_default(
    fitted: WarmStartFTRecommender, data: Synthetic
) -> None:
    assert fitted.config.inference == "onnx-int8"
    encoder = fitted.encoder
    assert isinstance(encoder, CachedEncoder) and isinstance(encoder.encoder, OnnxEncoder)
    assert fitted.tower is not None
    torch_name = FineTunedEncoder(fitted.tower).name
    assert encoder.name == f"{torch_name}+onnx-int8-{INT8_RECIPE}"  # never shares a cache
    texts = data.dataset.item_texts()[:8] + TEXTS
    ours, tower = fitted.encode(texts), fitted.tower.encode(texts)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    assert _cosines(ours, tower)[keep].min() >= 0.99


def test_warmstart_ft_saved_and_loaded_encodes_identically(
    fitted: WarmStartFTRecommender, data: Synthetic, tmp_path: Path
) -> None:
    loaded = Recommender.load(fitted.save(tmp_path / "model"))
    assert isinstance(loaded, WarmStartFTRecommender)
    assert loaded.encoder.name == fitted.encoder.name
    texts = [*TEXTS, *data.dataset.item_texts()[:5]]
    assert np.array_equal(loaded.encode(texts), fitted.encode(texts))
    users = sorted(data.warm_users)[:5]
    assert np.array_equal(loaded.recommend(users, k=5).scores, fitted.recommend(users, k=5).scores)


def test_warmstart_ft_torch_inference_when_configured(cache: Path) -> None:
    model = WarmStartFTRecommender(cache_dir=cache, inference="torch")
    model._use_tower(TextTower(FineTuneConfig()))
    encoder = model.encoder
    assert isinstance(encoder, CachedEncoder) and isinstance(encoder.encoder, FineTunedEncoder)
    assert "onnx" not in encoder.name
    with pytest.raises(pydantic.ValidationError):
        WarmStartFTRecommender(inference="onnx-fp16")


def test_warmstart_ft_falls_back_to_torch_without_onnxruntime(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(tower: TextTower) -> OnnxEncoder:
        raise MissingDependencyError("no onnxruntime here")

    monkeypatch.setattr(finetuned_module, "_int8_encoder", missing)
    model = WarmStartFTRecommender(cache_dir=cache)
    with caplog.at_level(logging.WARNING, logger=finetuned_module.__name__):
        model._use_tower(TextTower(FineTuneConfig()))
    assert isinstance(model.encoder, CachedEncoder)
    assert isinstance(model.encoder.encoder, FineTunedEncoder)
    assert "encodes with torch" in caplog.text
