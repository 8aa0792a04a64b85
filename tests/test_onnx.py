"""The int8 ONNX encoder: exported from a (fine-tuned) tower, it encodes like the tower does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("peft")

from synthetic import make_clustered
from warmstart.finetune import FineTuneConfig, TextTower, finetune
from warmstart.finetune.export import export_onnx
from warmstart.text.onnx_encoder import OnnxEncoder

TEXTS = [
    "A quiet film about a lighthouse keeper and the sea.",
    "",
    "Graph neural networks for predicting molecular properties. " * 12,
    "romance, comedy",
]


def test_export_matches_the_tower_and_int8_stays_close(tmp_path: Path) -> None:
    tower = TextTower(FineTuneConfig(max_length=64))
    folder = export_onnx(tower, tmp_path / "onnx")
    reference = tower.encode(TEXTS)
    fp32 = OnnxEncoder(folder, int8=False).encode(TEXTS)
    int8 = OnnxEncoder(folder).encode(TEXTS)
    assert not np.any(fp32[1]) and not np.any(int8[1])  # blank text: zero row, as everywhere
    keep = [0, 2, 3]
    assert np.allclose(np.sum(fp32[keep] * reference[keep], axis=1), 1.0, atol=1e-4)
    assert np.all(np.sum(int8[keep] * reference[keep], axis=1) > 0.97)
    assert OnnxEncoder(folder).name.endswith("+onnx-int8")
    assert OnnxEncoder(folder, int8=False).name.endswith("+onnx-fp32")
    # int8 MatMul weights; the token embedding table (a Gather) stays fp32
    assert (folder / "model.int8.onnx").stat().st_size < 0.7 * (
        folder / "model.onnx"
    ).stat().st_size


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


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"encoder\.onnx\.json"):
        OnnxEncoder(tmp_path)
