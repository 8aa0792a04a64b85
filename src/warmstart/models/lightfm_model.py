"""LightFM (Kula 2015) as a hybrid baseline: the real library, with text-derived features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from warmstart._progress import tqdm
from warmstart.data.dataset import Dataset
from warmstart.errors import ModelFormatError
from warmstart.models.arrays import cosine, standardise
from warmstart.models.base import ModelConfig, ProfileQuery, Recommender
from warmstart.models.catalogue import Catalogue
from warmstart.models.cf import fold_in, profile_rows
from warmstart.models.textaware import TextAware

TextFeatures = Literal["sparse", "pca", "raw"]


class LightFMConfig(ModelConfig):
    encoder: str = "default"
    loss: Literal["warp", "bpr", "logistic"] = "warp"
    no_components: int = Field(64, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    item_alpha: float = Field(1e-6, ge=0)
    user_alpha: float = Field(1e-6, ge=0)
    epochs: int = Field(50, gt=0)
    max_sampled: int = Field(10, gt=0)  # WARP: negatives tried per positive before giving up
    text_features: TextFeatures = "sparse"
    n_clusters: int = Field(1024, gt=0)  # sparse: k-means centroids per side, at most...
    texts_per_cluster: int = Field(16, gt=0)  # ...one per this many distinct texts
    n_nearest: int = Field(4, gt=0)  # sparse: centroids each text is coded with
    pca_dims: int = Field(32, gt=0)  # pca: projected dimensions
    item_identity: bool = True  # False: items are their text features only (pure content)
    sample_weight: bool = False  # weight positives by interaction strength instead of 1
    fold_in_alpha: float = Field(40.0, ge=0)  # a named item's confidence is 1 + alpha, as in ALS
    fold_in_regularization: float = Field(1.0, gt=0)  # ridge, in units of mean eigenvalue of VᵀV
    text_weight: float = 2.0  # free text vs item text, on data without user text
    # LightFM's threads update shared weights without locks (Hogwild), so two fits on 2 threads
    # differ (0.02 recall@20 between identical runs); one thread makes a benchmark repeatable.
    num_threads: int = Field(1, gt=0)
    seed: int = 0


class _TextCoder:
    """Turns normalised text embeddings into LightFM feature rows; one fitted transform per side.

    `sparse`: each text is coded by its `n_nearest` k-means centroids (cosine), weights normalised
    to sum 1; `pca`: projection onto the top principal directions, rows scaled to unit norm;
    `raw`: the embedding itself. A text-less (zero) embedding always gives an empty row.
    """

    def __init__(
        self, kind: TextFeatures, basis: np.ndarray, mean: np.ndarray, n_nearest: int
    ) -> None:
        self.kind: TextFeatures = kind
        self.basis = basis  # sparse: centroids (C, d); pca: components (p, d); raw: (0, d)
        self.mean = mean  # pca: centring vector; otherwise zeros
        self.n_nearest = n_nearest

    @classmethod
    def empty(cls, dim: int) -> _TextCoder:
        """No text features at all (a side without text)."""
        return cls("sparse", np.zeros((0, dim), np.float32), np.zeros(dim, np.float32), 0)

    @classmethod
    def fit(cls, emb: np.ndarray, cfg: LightFMConfig) -> _TextCoder:
        d = emb.shape[1]
        rows = np.unique(emb[np.any(emb, axis=1)].astype(np.float64), axis=0)
        if len(rows) == 0:
            return cls.empty(d)
        if cfg.text_features == "raw":
            return cls("raw", np.zeros((0, d), np.float32), np.zeros(d, np.float32), 0)
        if cfg.text_features == "pca":
            mean = rows.mean(axis=0)
            _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
            return cls("pca", vt[: cfg.pca_dims].astype(np.float32), mean.astype(np.float32), 0)
        from sklearn.cluster import KMeans

        n = max(1, min(cfg.n_clusters, len(rows) // cfg.texts_per_cluster))
        km = KMeans(n_clusters=n, n_init=1, max_iter=100, random_state=cfg.seed).fit(rows)
        centroids = km.cluster_centers_
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
        return cls("sparse", centroids.astype(np.float32), np.zeros(d, np.float32), cfg.n_nearest)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0] if self.kind == "raw" else self.basis.shape[0])

    def transform(self, emb: np.ndarray) -> sp.csr_matrix:
        n = emb.shape[0]
        if self.n_features == 0:
            return sp.csr_matrix((n, 0), dtype=np.float32)
        has = np.any(emb, axis=1)
        if self.kind == "sparse":
            m = min(self.n_nearest, self.basis.shape[0])
            sims = emb @ self.basis.T
            cols = np.argpartition(-sims, m - 1, axis=1)[:, :m]
            vals = np.maximum(np.take_along_axis(sims, cols, axis=1), 1e-6)
            vals = vals / vals.sum(axis=1, keepdims=True)
            vals[~has] = 0.0
            out = sp.csr_matrix(
                (vals.ravel(), (np.repeat(np.arange(n), m), cols.ravel())),
                shape=(n, self.n_features),
            )
        else:
            dense = emb if self.kind == "raw" else (emb - self.mean) @ self.basis.T
            dense = dense / (np.linalg.norm(dense, axis=1, keepdims=True) + 1e-12)
            dense[~has] = 0.0
            out = sp.csr_matrix(dense)
        out = out.astype(np.float32)
        out.eliminate_zeros()
        out.sort_indices()
        return out

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_kind": np.asarray(self.kind),
            f"{prefix}_basis": self.basis,
            f"{prefix}_mean": self.mean,
            f"{prefix}_nearest": np.asarray(self.n_nearest, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> _TextCoder:
        kinds: dict[str, TextFeatures] = {"sparse": "sparse", "pca": "pca", "raw": "raw"}
        kind = str(arrays[f"{prefix}_kind"])
        if kind not in kinds:
            raise ModelFormatError(f"unknown text feature kind {kind!r} in the saved state")
        return cls(
            kinds[kind],
            arrays[f"{prefix}_basis"],
            arrays[f"{prefix}_mean"],
            int(arrays[f"{prefix}_nearest"]),
        )


class LightFMRecommender(TextAware, Recommender):
    """LightFM hybrid baseline: the `lightfm` library with identity + text-derived features.

    Features. An item is [its identity | its text features], a user [identity | text features]
    (identity only where the data has no user text); text comes from the sentence encoder.
    Feeding the raw 384-d embedding makes every LightFM update touch 385 feature vectors: on
    CiteULike (cold items, 2 cores) 10 epochs took 340 s for Recall@20 0.471 on the validation
    items. The default (`text_features="sparse"`) codes each text by its `n_nearest`=4 nearest of
    C k-means centroids, weights normalised to sum 1: 5 features per entity, 10 epochs in ~30 s,
    and better ranking (C=1024: 0.510; PCA to 32 dims: 0.475 in 43 s). Discrete codes act like
    learned topics and keep the identity from drowning in a dense vector. C is `n_clusters`, but
    at most one centroid per `texts_per_cluster` distinct texts: on ML-100K, with 526 distinct
    user descriptions, a centroid per text made demographics an identity and cold users scored
    0.44 NDCG@10 instead of 0.50.

    Cold entities. Only warm items and users (with training interactions) get an identity
    feature, and LightFM is trained on the warm items only: an untrained identity embedding is
    random noise, and WARP would otherwise sample cold items as negatives and push their text
    features down. So a cold item or cold user is its text features alone (no identity term),
    and so are items added later with `add_items`. `item_identity=False` drops item identities
    altogether: items become a pure content model.

    Scoring. After fitting, every item is [v, b_v, 1] and every user [u, 1, b_u], LightFM's own
    representations and biases, so scores equal LightFM's predictions, as one matrix product.

    Visitors. Their own text (where the data has user text) goes through the learned user-text
    feature embeddings, as a cold user's would. LightFM has no fold-in, so named items are folded
    in with the ALS least-squares update on the LightFM item vectors V (confidence 1 +
    `fold_in_alpha` on named items, ridge `fold_in_regularization` times the mean eigenvalue of
    VᵀV, so the setting is scale-free) and the result is added to the text part: a least-squares
    stand-in for the identity embedding the visitor would have learned. On data whose users have
    no text, free text is matched against item text embeddings instead (standardised sum with
    weight `text_weight`, as the warmstart model does). A visitor with nothing gets popularity.
    """

    name = "lightfm"
    Config = LightFMConfig
    config: LightFMConfig
    serves_cold_users = True
    serves_cold_items = True

    saved_arrays = (
        "item_embeddings",
        "item_vectors",
        "user_vectors",
        "item_feature_embeddings",
        "item_feature_biases",
        "user_feature_embeddings",
        "user_feature_biases",
    )

    def __init__(self, cache_dir: str | Path | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.item_embeddings = np.empty((0, 0), dtype=np.float32)  # text embeddings
        self.item_vectors = np.empty((0, 0), dtype=np.float32)  # [v, b_v, 1]
        self.user_vectors = np.empty((0, 0), dtype=np.float32)  # [u, 1, b_u]
        # learned embeddings and biases of the text features (identity parts live in the vectors)
        self.item_feature_embeddings = np.empty((0, 0), dtype=np.float32)
        self.item_feature_biases = np.empty(0, dtype=np.float32)
        self.user_feature_embeddings = np.empty((0, 0), dtype=np.float32)
        self.user_feature_biases = np.empty(0, dtype=np.float32)
        self.item_coder: _TextCoder | None = None
        self.user_coder: _TextCoder | None = None
        self.uses_user_text_ = False

    # ---- fitting -------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        from lightfm import LightFM

        cfg = self.config
        self.item_embeddings = self.encode(catalogue.item_text)
        user_emb = self.encode(catalogue.user_text)
        self.uses_user_text_ = bool(np.any(user_emb))
        seen = catalogue.seen.tocsr().astype(np.float32)
        seen.eliminate_zeros()
        warm_items = np.flatnonzero(np.bincount(seen.indices, minlength=seen.shape[1]) > 0)
        warm_users = np.flatnonzero(np.diff(seen.indptr) > 0)
        identity_items = warm_items if cfg.item_identity else warm_items[:0]

        self.item_coder = _TextCoder.fit(self.item_embeddings, cfg)
        item_codes = self.item_coder.transform(self.item_embeddings)
        # without user text, users are identity only (an empty coder keeps one code path)
        self.user_coder = (
            _TextCoder.fit(user_emb, cfg)
            if self.uses_user_text_
            else _TextCoder.empty(user_emb.shape[1])
        )
        user_codes = self.user_coder.transform(user_emb)

        train = seen[warm_users][:, warm_items].tocoo()
        weights = train.copy() if cfg.sample_weight else None
        train.data[:] = 1.0
        item_features = sp.hstack(
            [_identity(warm_items, identity_items), item_codes[warm_items]],
            format="csr",
        )
        user_features = sp.hstack(
            [sp.identity(len(warm_users), np.float32, format="csr"), user_codes[warm_users]],
            format="csr",
        )
        model = LightFM(
            no_components=cfg.no_components,
            loss=cfg.loss,
            learning_rate=cfg.learning_rate,
            item_alpha=cfg.item_alpha,
            user_alpha=cfg.user_alpha,
            max_sampled=cfg.max_sampled,
            random_state=np.random.RandomState(cfg.seed),
        )
        for _ in tqdm(range(cfg.epochs), desc="lightfm", unit="epoch", disable=None):
            model.fit_partial(
                train,
                user_features=user_features,
                item_features=item_features,
                sample_weight=weights,
                epochs=1,
                num_threads=cfg.num_threads,
            )

        n_wi, n_wu = len(identity_items), len(warm_users)
        self.item_feature_embeddings = np.asarray(model.item_embeddings[n_wi:], np.float32)
        self.item_feature_biases = np.asarray(model.item_biases[n_wi:], np.float32)
        self.user_feature_embeddings = np.asarray(model.user_embeddings[n_wu:], np.float32)
        self.user_feature_biases = np.asarray(model.user_biases[n_wu:], np.float32)
        items, item_bias = self._text_part(item_codes, "item")
        items[identity_items] += model.item_embeddings[:n_wi]
        item_bias[identity_items] += model.item_biases[:n_wi]
        users, user_bias = self._text_part(user_codes, "user")
        users[warm_users] += model.user_embeddings[:n_wu]
        user_bias[warm_users] += model.user_biases[:n_wu]
        self.item_vectors = _item_rows(items, item_bias)
        self.user_vectors = _user_rows(users, user_bias)

    def _text_part(
        self, codes: sp.csr_matrix, side: Literal["item", "user"]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Representation and bias of entities described by text feature rows only."""
        emb, bias = (
            (self.item_feature_embeddings, self.item_feature_biases)
            if side == "item"
            else (self.user_feature_embeddings, self.user_feature_biases)
        )
        if codes.shape[1] == 0:
            return (
                np.zeros((codes.shape[0], self.config.no_components), np.float32),
                np.zeros(codes.shape[0], np.float32),
            )
        return (
            np.asarray(codes @ emb, dtype=np.float32),
            np.asarray(codes @ bias, dtype=np.float32).ravel(),
        )

    # ---- scoring -------------------------------------------------------------------------
    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return self.user_vectors[users] @ self.item_vectors.T

    def _profile_users(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        """[u, 1, b_u] per visitor: own text through the user-text features, plus named items.

        Named items are folded in by the ALS least-squares update on the LightFM item vectors V.
        The ridge is relative (`fold_in_regularization` times the mean eigenvalue of VᵀV), so one
        setting means the same on catalogues of any size and on vectors of any scale.
        """
        assert self.user_coder is not None
        cfg = self.config
        k = cfg.no_components
        users = np.zeros((len(queries), k), np.float32)
        bias = np.zeros(len(queries), np.float32)
        if self.uses_user_text_:
            codes = self.user_coder.transform(self.encode([q.user_text for q in queries]))
            users, bias = self._text_part(codes, "user")
        rows = profile_rows(queries, self.catalogue.n_items)
        if rows.nnz:
            v = self.item_vectors[:, :k]
            ridge = cfg.fold_in_regularization * float(np.square(v, dtype=np.float64).sum()) / k
            rows.data = 1.0 + cfg.fold_in_alpha * rows.data
            users = users + fold_in(v, rows, ridge)
        return _user_rows(users, bias)

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        scores = self._profile_users(queries) @ self.item_vectors.T
        has_items = np.array([q.items.size > 0 for q in queries], dtype=bool)
        if self.uses_user_text_:
            described = np.array([bool(q.user_text) for q in queries], dtype=bool)
        else:
            # No user-text features were learned: free text is matched against item text instead.
            described = np.array([bool(q.text) for q in queries], dtype=bool)
            free = np.flatnonzero(described)
            if free.size:
                sims = self.encode([queries[int(j)].text for j in free]) @ self.item_embeddings.T
                base = np.where(has_items[free, None], standardise(scores[free]), 0.0)
                scores[free] = base + self.config.text_weight * standardise(sims)
        scores[~has_items & ~described] = self._pop()  # nothing to go on: popularity
        return np.asarray(scores, dtype=np.float32)

    def _score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Items whose learned vectors match the text's item-text features, plus direct text match."""
        assert self.item_coder is not None
        emb = self.encode(list(texts))
        k = self.config.no_components
        as_item, _ = self._text_part(self.item_coder.transform(emb), "item")
        cf = cosine(as_item, self.item_vectors[:, :k])
        return self._with_text_match(cf, emb)

    def _similar_scores(self, items: np.ndarray) -> np.ndarray:
        k = self.config.no_components
        return cosine(self.item_vectors[items, :k], self.item_vectors[:, :k])

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        k = self.config.no_components
        return cosine(self.item_vectors[[item], :k], self.item_vectors[others, :k])[0]

    def _explain_notes(self, item: int, history: np.ndarray) -> list[str]:
        if self.catalogue.item_counts()[item] == 0:
            return ["new item: placed by its text features alone"]
        return []

    # ---- catalogue growth ----------------------------------------------------------------
    def _add_item_rows(self, texts: list[str]) -> None:
        """New items are their text features through the learned embeddings: recommendable at once."""
        assert self.item_coder is not None
        emb = self.encode(texts)
        vectors, bias = self._text_part(self.item_coder.transform(emb), "item")
        self.item_embeddings = np.vstack([self.item_embeddings, emb])
        self.item_vectors = np.vstack([self.item_vectors, _item_rows(vectors, bias)])

    # ---- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        assert self.item_coder is not None and self.user_coder is not None
        return {
            **super()._state(),
            "uses_user_text": np.asarray(self.uses_user_text_),
            **self.item_coder.to_arrays("item_coder"),
            **self.user_coder.to_arrays("user_coder"),
        }

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        self.uses_user_text_ = bool(arrays["uses_user_text"])
        self.item_coder = _TextCoder.from_arrays(arrays, "item_coder")
        self.user_coder = _TextCoder.from_arrays(arrays, "user_coder")


def _identity(rows: np.ndarray, with_identity: np.ndarray) -> sp.csr_matrix:
    """Identity columns for the entities `with_identity` (a subset of `rows`), in `rows` order."""
    pos = np.searchsorted(rows, with_identity)
    return sp.csr_matrix(
        (np.ones(len(pos), np.float32), (pos, np.arange(len(pos)))),
        shape=(len(rows), len(pos)),
    )


def _item_rows(vectors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    ones = np.ones_like(bias)
    return np.hstack([vectors, bias[:, None], ones[:, None]]).astype(np.float32)


def _user_rows(vectors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    ones = np.ones_like(bias)
    return np.hstack([vectors, ones[:, None], bias[:, None]]).astype(np.float32)
