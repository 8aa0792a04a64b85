"""warmstart-ft: the warmstart hybrid on top of a text encoder fine-tuned on the same interactions."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from warmstart.data.dataset import Dataset
from warmstart.finetune.config import FineTuneConfig
from warmstart.finetune.tower import FineTunedEncoder, TextTower
from warmstart.finetune.trainer import finetune
from warmstart.models.catalogue import Catalogue
from warmstart.models.hybrid import WarmStartConfig, WarmStartRecommender
from warmstart.text import MissingDependencyError, TextEncoder
from warmstart.text.cache import CachedEncoder

log = logging.getLogger(__name__)

_PREFIX = "ft."  # saved tower tensors live in the model's state.npz under this prefix


def _aligned() -> FineTuneConfig:
    return FineTuneConfig(objective="alignment")


class WarmStartFTConfig(WarmStartConfig):
    # alignment unless an objective is named: see WarmStartFTRecommender's docstring
    finetune: FineTuneConfig = Field(default_factory=_aligned)
    # How the tuned encoder runs once trained. `onnx-int8`: exported (adapters merged) and
    # quantised, run by onnxruntime, about 2x faster than torch with cosine >= 0.99 to it; torch
    # is used instead when onnxruntime is not installed. `torch`: the tower itself, in fp32.
    inference: Literal["onnx-int8", "torch"] = "onnx-int8"

    @field_validator("finetune", mode="before")
    @classmethod
    def _alignment_unless_named(cls, value: Any) -> Any:
        """`{"finetune": {"epochs": 2}}` keeps the alignment objective; naming one overrides it."""
        if isinstance(value, Mapping) and "objective" not in value:
            return {**value, "objective": "alignment"}
        return value


class WarmStartFTRecommender(WarmStartRecommender):
    """warmstart whose text encoder first learns, from the training interactions, what people pick.

    Fit runs in two stages. First the encoder (MiniLM) is fine-tuned on the training data
    (`finetune`: LoRA adapters on the top 2 layers, early stopping on items held out of that
    training). Then the ordinary warmstart hybrid is fitted on the fine-tuned embeddings: the
    text maps, the blend weights and everything else are chosen as in `warmstart`. If
    fine-tuning does not beat the untrained encoder on its held-out items, the untrained weights
    are kept, so the model falls back to `warmstart`.

    The objective here defaults to `alignment`, not to `warmstart finetune`'s `contrastive`:
    warmstart ranks cold items through a map from text to the collaborative factors, and
    alignment trains the text for exactly that map (the head reproduces each item's ALS factors
    and their ranking). On ML-100K's inner cold-item folds it gave 1.08x warmstart's NDCG@10,
    contrastive 1.04x (BENCHMARKS.md). Contrastive suits a text-only retriever: user text or
    history profiles against item text, with no CF model behind it. Name an objective in
    `finetune` to choose another; the other fields of `finetune` keep alignment.

    Use it when item text is rich (abstracts, descriptions, plots) and there is time to train:
    minutes on 2 cores for MovieLens-size catalogues. The trained tensors (a LoRA adapter is
    about 0.4 MB) are saved inside the model folder; the base weights come from the installed
    MiniLM package, so a saved model loads offline.

    By default (`inference="onnx-int8"`) the tuned tower is exported to int8 ONNX after
    training and again after loading (deterministic, from the same tensors, so a loaded model
    encodes exactly as the saved one did); item and query texts are then encoded by
    onnxruntime. The encoder's name says which path made a vector, so caches never mix them.
    """

    name = "warmstart-ft"
    Config = WarmStartFTConfig
    config: WarmStartFTConfig

    def __init__(self, cache_dir: str | Path | None = None, **params: Any) -> None:
        super().__init__(cache_dir=cache_dir, **params)
        self.tower: TextTower | None = None
        self.finetune_history_: list[dict[str, float]] = []
        self.finetune_seconds_ = 0.0

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        result = finetune(dataset, self.config.finetune, progress=False)
        self.finetune_history_ = result.history
        self.finetune_seconds_ = result.seconds
        log.info(
            "warmstart-ft: fine-tuned in %.0f s; best epoch %d of %d (validation recall %.4f)",
            result.seconds,
            result.best_epoch,
            len(result.history) - 1,
            result.best_recall,
        )
        self._use_tower(result.tower)
        super()._fit(dataset, catalogue)

    def _use_tower(self, tower: TextTower) -> None:
        self.tower = tower
        self.set_encoder(CachedEncoder(self._inference_encoder(tower), self.cache_dir))

    def _inference_encoder(self, tower: TextTower) -> TextEncoder:
        """int8 ONNX unless configured otherwise or onnxruntime is missing; else the tower."""
        if self.config.inference == "onnx-int8":
            try:
                return _int8_encoder(tower)
            except MissingDependencyError as exc:
                log.warning("warmstart-ft encodes with torch: no int8 ONNX path (%s)", exc)
        return FineTunedEncoder(tower)

    def _state(self) -> dict[str, np.ndarray]:
        assert self.tower is not None
        tensors = {f"{_PREFIX}{k}": v for k, v in self.tower.trainable_state().items()}
        return {**super()._state(), **tensors}

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        tower = TextTower(self.config.finetune)
        n = len(_PREFIX)
        tower.load_trainable_state({k[n:]: v for k, v in arrays.items() if k.startswith(_PREFIX)})
        self._use_tower(tower)


def _int8_encoder(tower: TextTower) -> TextEncoder:
    """The tower exported to int8 ONNX in a scratch folder; the encoder keeps it in memory."""
    from warmstart.finetune.export import export_onnx
    from warmstart.text.onnx_encoder import OnnxEncoder

    with tempfile.TemporaryDirectory(prefix="warmstart-onnx-") as tmp:
        folder = export_onnx(tower, Path(tmp) / "encoder")
        return OnnxEncoder(folder, threads=tower.config.num_threads)
