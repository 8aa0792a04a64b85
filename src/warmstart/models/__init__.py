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
from warmstart.models.dropoutnet import DropoutNetConfig, DropoutNetRecommender
from warmstart.models.hybrid import WarmStartConfig, WarmStartRecommender
from warmstart.models.lightfm_model import LightFMConfig, LightFMRecommender

__all__ = [
    "ALSRecommender",
    "CFConfig",
    "ContentKNNRecommender",
    "DropoutNetConfig",
    "DropoutNetRecommender",
    "Explanation",
    "ItemKNNRecommender",
    "LightFMConfig",
    "LightFMRecommender",
    "PopularityRecommender",
    "Profile",
    "RandomRecommender",
    "Recommendations",
    "Recommender",
    "UserKNNRecommender",
    "WarmStartConfig",
    "WarmStartRecommender",
]
