"""Baselines as first-class models: random, popularity, item-kNN, user-kNN and content-kNN."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from warmstart.data.dataset import Dataset
from warmstart.models.arrays import binary, cosine_knn, csr_from_state, csr_state
from warmstart.models.base import ModelConfig, ProfileQuery, Recommender
from warmstart.models.catalogue import Catalogue
from warmstart.models.cf import profile_rows
from warmstart.models.textaware import TextAware


class RandomConfig(ModelConfig):
    seed: int = 0


class RandomRecommender(Recommender):
    """Uniformly random ranking: the floor every model must clear. Same user, same list."""

    name = "random"
    Config = RandomConfig
    config: RandomConfig
    serves_cold_users = True
    serves_cold_items = True

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        pass

    def _random(self, keys: np.ndarray) -> np.ndarray:
        n = self.catalogue.n_items
        return (
            np.stack(
                [
                    np.random.default_rng([self.config.seed, int(key)]).random(n, dtype=np.float32)
                    for key in keys
                ]
            )
            if len(keys)
            else np.empty((0, n), dtype=np.float32)
        )

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return self._random(users)

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        # A stable hash (Python's str hash changes per process): same visitor, same list, always.
        keys = np.array(
            [
                zlib.crc32(repr((q.text, q.attribute_text, q.items.tolist())).encode())
                for q in queries
            ]
        )
        return self._random(keys)


class PopularityConfig(ModelConfig):
    pass


class PopularityRecommender(Recommender):
    """Most-interacted items first. A hard baseline for cold users on many datasets."""

    name = "popularity"
    Config = PopularityConfig
    serves_cold_users = True

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        pass

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self._pop(), (len(users), 1))


class KNNConfig(ModelConfig):
    neighbours: int = 100


class ItemKNNRecommender(Recommender):
    """Item-based kNN (cosine on who interacted with what); folds in visitors who name items."""

    name = "item-knn"
    Config = KNNConfig
    config: KNNConfig

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        self.similarity = cosine_knn(binary(catalogue.seen), self.config.neighbours)

    def _rows(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray((rows @ self.similarity).todense(), dtype=np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return self._rows(binary(self.catalogue.seen[users]))

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        rows = profile_rows(queries, self.catalogue.n_items)
        scores = self._rows(rows)
        scores[np.diff(rows.indptr) == 0] = self._pop()
        return scores

    def _similar_scores(self, items: np.ndarray) -> np.ndarray:
        return np.asarray(self.similarity[items].todense(), dtype=np.float32)

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        return np.asarray(self.similarity[item, others].todense(), dtype=np.float32).ravel()

    def _state(self) -> dict[str, np.ndarray]:
        return csr_state(self.similarity)

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.similarity = csr_from_state(arrays)


class UserKNNRecommender(Recommender):
    """User-based kNN: items liked by the users whose behaviour is most similar (cosine)."""

    name = "user-knn"
    Config = KNNConfig
    config: KNNConfig

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        self.similarity = cosine_knn(binary(catalogue.seen).T.tocsr(), self.config.neighbours)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(
            (self.similarity[users] @ binary(self.catalogue.seen)).todense(), dtype=np.float32
        )

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        seen = binary(self.catalogue.seen)
        rows = profile_rows(queries, self.catalogue.n_items)
        user_norm = np.sqrt(np.asarray(seen.sum(axis=1)).ravel()) + 1e-9
        sims = np.asarray((rows @ seen.T).todense(), dtype=np.float32) / user_norm[None, :]
        k = min(self.config.neighbours, sims.shape[1])
        if k < sims.shape[1]:
            cut = np.partition(sims, -k, axis=1)[:, -k][:, None]
            sims[sims < cut] = 0.0
        scores = np.asarray((sp.csr_matrix(sims) @ seen).toarray(), dtype=np.float32)
        scores[np.diff(rows.indptr) == 0] = self._pop()
        return scores

    def _state(self) -> dict[str, np.ndarray]:
        return csr_state(self.similarity)

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.similarity = csr_from_state(arrays)


class ContentKNNConfig(ModelConfig):
    encoder: str = "default"


class ContentKNNRecommender(TextAware, Recommender):
    """Text similarity between an item and the user's history (mean embedding) or the user's text."""

    name = "content-knn"
    Config = ContentKNNConfig
    config: ContentKNNConfig
    serves_cold_users = True
    serves_cold_items = True

    saved_arrays = ("item_embeddings", "user_text_embeddings")

    def __init__(self, cache_dir: str | None = None, **params: Any) -> None:
        super().__init__(**params)
        from pathlib import Path

        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.item_embeddings = np.empty((0, 0), dtype=np.float32)
        self.user_text_embeddings = np.empty((0, 0), dtype=np.float32)

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        self.item_embeddings = self.encode(catalogue.item_text)
        self.user_text_embeddings = self.encode(catalogue.user_text)

    def _profiles(self, rows: sp.csr_matrix, fallback: np.ndarray) -> np.ndarray:
        """Mean embedding of each row's items; `fallback` rows where a row has no items."""
        counts = np.diff(rows.indptr)
        means = np.asarray(binary(rows) @ self.item_embeddings, dtype=np.float32)
        means /= np.maximum(counts, 1)[:, None]
        return np.where((counts > 0)[:, None], means, fallback)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        profiles = self._profiles(self.catalogue.seen[users], self.user_text_embeddings[users])
        return profiles @ self.item_embeddings.T

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        rows = profile_rows(queries, self.catalogue.n_items)
        text = self.encode([q.user_text for q in queries])
        scores = self._profiles(rows, text) @ self.item_embeddings.T
        nothing = (np.diff(rows.indptr) == 0) & ~np.any(text, axis=1)
        scores[nothing] = self._pop()
        return scores

    def _score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(list(texts)) @ self.item_embeddings.T

    def _similar_scores(self, items: np.ndarray) -> np.ndarray:
        return self.item_embeddings[items] @ self.item_embeddings.T

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        return self.item_embeddings[others] @ self.item_embeddings[item]

    def _text_similarity(self, text: str | None, item: int) -> float | None:
        if not text:
            return None
        return float(self.encode([text])[0] @ self.item_embeddings[item])

    def _add_item_rows(self, texts: list[str]) -> None:
        self.item_embeddings = np.vstack([self.item_embeddings, self.encode(texts)])
