"""The hybrid's settings: what is fixed, what is chosen on held-out data (None), and the grids."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from warmstart.models.base import ModelConfig
from warmstart.models.cf import CFConfig


class WarmStartConfig(ModelConfig):
    """Settings of `WarmStartRecommender` (its docstring says when to change which)."""

    encoder: str = "default"
    cf: CFConfig = Field(default_factory=CFConfig)
    mapper: Literal["ridge", "kernel", "mlp"] = "kernel"  # item text -> item factors
    user_mapper: Literal["ridge", "mlp"] = "ridge"  # user features -> user factors
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    kernel_gamma: float = 1.0
    kernel_alphas: tuple[float, ...] = (0.3, 1.0, 3.0)
    kernel_landmarks: int = 2000
    mlp_hidden: int = 256
    lambda_items: float | None = None  # None: chosen on validation data
    lambda_users: float | None = None
    lambda_grid: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)
    validation_fraction: float = 0.1
    validation_k: int = 20
    text_weight: float = 2.0
    history_samples: tuple[int, ...] = (1, 3, 5)
    # Truncated training histories: each user's first items by time (when the data has
    # timestamps), or random ones.
    history_order: Literal["earliest", "random"] = "earliest"
    # The user's taste read directly in text space (ALS fold-in with item embeddings as factors),
    # added to the collaborative score with weight beta; None = chosen on held-out cold items.
    text_profile_weight: float | None = None
    text_profile_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    text_profile_alpha: float = 10.0
    text_profile_regularization: float = 10.0
    cold_validation_fraction: float = 0.1
    # Users with few or no interactions: the items they named, read through co-occurrence
    # neighbours, and a popularity prior that fades as they interact. None = chosen on users
    # held out of a second fit, with their earliest items revealed.
    neighbours: int = 100
    # Neighbour similarities divided by the neighbour's interaction count to this power (RP3beta's
    # popularity penalty): 0 leaves blockbusters the neighbours of everything.
    neighbour_popularity_penalty: float = Field(default=0.5, ge=0.0)
    neighbour_weight: float | None = None
    popularity_weight: float | None = None
    # The prior's weight is multiplied by popularity_fade ** n after n events (and by 1 - w(n)).
    popularity_fade: float | None = None
    neighbour_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    popularity_grid: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    popularity_fade_grid: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3)
    cold_user_fraction: float = 0.1
    cold_user_revealed: tuple[int, ...] = (1, 3, 5)
    # Newcomers' events must steer: after `responsiveness_events` events, at least this share
    # of their top 10 must be items those events brought in (0 turns the constraint off).
    min_responsiveness: float = Field(default=0.5, ge=0.0, le=1.0)
    responsiveness_events: int = Field(default=3, ge=1)
    # Warm users: their score plus these weights times the standardised neighbour score of their
    # history and popularity (item-kNN and popularity, where those beat the factors on sparse
    # data). None = chosen on the held-out slice that chooses the lambdas; 0 where they do not help.
    warm_neighbour_weight: float | None = None
    warm_popularity_weight: float | None = None
    warm_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    # Warm users: an item with no interactions yet gets boost * its standardised score (where
    # positive) added, fading as it collects some, so new items that fit reach lists where warm
    # items have neighbour and popularity terms. None = the largest gain for held-out new items
    # that costs the held-out warm interactions at most new_item_cost of their NDCG. The
    # validation holds out a tenth of the items, so the cost is that of a catalogue where one
    # item in ten is new: at 0.05 new items stayed below random on MovieLens lists.
    new_item_boost: float | None = None
    new_item_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    new_item_cost: float = Field(default=0.2, ge=0.0, le=1.0)
    # ALS factors, regularisation and confidence weight (and BPR, on data without strengths)
    # chosen on the held-out slice, starting from `cf`; off: `cf` as given.
    tune_cf: bool = True
    cf_factor_grid: tuple[int, ...] = (32, 64, 128)
    cf_regularization_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    cf_alpha_grid: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    cf_search_seconds: float = Field(default=60.0, gt=0)
    seed: int = 0
