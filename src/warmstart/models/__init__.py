"""Recommenders: CF, baselines, and the text-aware cold-start hybrid, behind one base class."""

from warmstart.models.base import Explanation, Profile, Recommendations, Recommender
from warmstart.models.baselines import (
    ContentKNNRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RandomRecommender,
    UserKNNRecommender,
)
from warmstart.models.cf import ALSRecommender, CFConfig
from warmstart.models.hybrid import WarmStartConfig, WarmStartRecommender
from warmstart.models.registry import MODELS, model_class

__all__ = [
    "MODELS",
    "ALSRecommender",
    "CFConfig",
    "ContentKNNRecommender",
    "Explanation",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Profile",
    "RandomRecommender",
    "Recommendations",
    "Recommender",
    "UserKNNRecommender",
    "WarmStartConfig",
    "WarmStartRecommender",
    "model_class",
]
