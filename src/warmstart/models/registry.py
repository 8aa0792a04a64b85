"""Model names used on the command line and in saved model folders."""

from __future__ import annotations

from warmstart.errors import ModelFormatError
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
from warmstart.models.finetuned import WarmStartFTRecommender
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
