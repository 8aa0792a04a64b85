"""Every model by the name used on the command line and in saved model folders.

Above the models and fine-tuning in the layers, so it can name them all; whoever loads a saved
folder of any kind (the CLI, the service) loads it through here."""

from __future__ import annotations

from pathlib import Path

from warmstart.errors import ModelFormatError
from warmstart.finetune.recommender import WarmStartFTRecommender
from warmstart.models.base import Recommender
from warmstart.models.baselines import (
    ContentKNNRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RandomRecommender,
    UserKNNRecommender,
)
from warmstart.models.cf import ALSRecommender
from warmstart.models.dropoutnet import DropoutNetRecommender
from warmstart.models.hybrid import WarmStartRecommender
from warmstart.models.lightfm_model import LightFMRecommender

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        RandomRecommender,
        PopularityRecommender,
        ALSRecommender,
        ItemKNNRecommender,
        UserKNNRecommender,
        ContentKNNRecommender,
        LightFMRecommender,
        DropoutNetRecommender,
        WarmStartRecommender,
        WarmStartFTRecommender,
    )
}


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelFormatError(
            f"unknown model {name!r}; known models: {', '.join(MODELS)}"
        ) from None


def load_model(directory: str | Path, *, mmap: bool = False) -> Recommender:
    """A saved model of any kind: every class is registered once this module is imported."""
    return Recommender.load(directory, mmap=mmap)
