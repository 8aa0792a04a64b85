"""What a live service needs of a model, as a protocol: the engine works against this, not a class.

A servable model places its users and items in three spaces the service indexes (the scoring
space, the collaborative space for similar items, the text space for free-text candidates),
decides how each user is served (`route_user`), scores newcomers from their profile with the
blend the request asks for, scores a warm user's candidates exactly, places new and edited
items at once, and explains what it ranked. `WarmStartRecommender` and `warmstart-ft` are the
models that offer all of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from warmstart.models.base import Explanation, ProfileQuery
from warmstart.models.catalogue import Catalogue
from warmstart.models.hybrid.blending import ColdBlend, ProfileParts
from warmstart.models.moments import ItemMoments
from warmstart.text import TextEncoder


@runtime_checkable
class ServableModel(Protocol):
    """The model side of `serve.engine.Engine`."""

    name: ClassVar[str]
    # Row i of each item array is internal item i; user_vectors, internal user i.
    item_vectors: np.ndarray  # scoring space: a score is user_vectors[u] . item_vectors[i]
    item_cf: np.ndarray  # collaborative space: similar items
    item_embeddings: np.ndarray  # text space: items near a visitor's free text
    user_vectors: np.ndarray
    cold_blend_: ColdBlend  # the newcomers' blend as fitted; a request may pass its own
    warm_neighbour_weight_: float
    warm_popularity_weight_: float

    @property
    def catalogue(self) -> Catalogue: ...

    @property
    def encoder(self) -> TextEncoder: ...

    def set_encoder(self, encoder: TextEncoder) -> None: ...

    @property
    def popularity(self) -> np.ndarray: ...

    def check_servable(self, encoder_dim: int) -> None:
        """Raise ModelFormatError if the model cannot serve with an encoder of this dimension."""
        ...

    def route_user(
        self, *, trained: bool, new_events: bool, history: int, described: bool
    ) -> str: ...

    # Newcomers: resolved once, then scored over every item or over candidates only.
    def profile_parts(
        self, queries: Sequence[ProfileQuery], blend: ColdBlend | None = None
    ) -> ProfileParts: ...

    def score_profile_parts(
        self, parts: ProfileParts, candidates: np.ndarray | None = None
    ) -> np.ndarray: ...

    def item_moments(self) -> ItemMoments: ...

    # Warm users whose score adds neighbour, popularity or new-item terms to the dot product.
    @property
    def blends_warm_users(self) -> bool: ...

    def score_warm_user(
        self, user: int, candidates: np.ndarray, near: sp.csr_matrix | None = None
    ) -> np.ndarray: ...

    def history_neighbours(self, user: int) -> sp.csr_matrix: ...

    # The catalogue as it changes.
    def add_items(
        self,
        item_ids: Sequence[Any],
        texts: Sequence[str | None] | None = None,
        attributes: Sequence[Mapping[str, Any]] | None = None,
        titles: Sequence[str | None] | None = None,
    ) -> None: ...

    def update_item_texts(
        self, items: np.ndarray, texts: Sequence[str], titles: Sequence[str] | None = None
    ) -> None: ...

    def explain_many(
        self,
        items: np.ndarray,
        history: np.ndarray,
        scores: Sequence[float] | np.ndarray,
        user_text: str | None = None,
        free_text: str | None = None,
        n_neighbours: int = 3,
    ) -> list[Explanation]: ...
