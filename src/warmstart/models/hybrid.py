"""warmstart's own model: collaborative filtering bridged to text, blended by how much we know."""

from __future__ import annotations

import functools
import json
import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from warmstart.data.dataset import Dataset
from warmstart.data.templates import short_label
from warmstart.errors import ModelFormatError
from warmstart.index.exact import topk
from warmstart.metrics import NDCG, hit_matrix
from warmstart.models.arrays import (
    binary,
    cosine,
    cosine_knn,
    csr_from_state,
    csr_state,
    standardise,
)
from warmstart.models.base import ModelConfig, ProfileQuery, Recommender
from warmstart.models.catalogue import Catalogue
from warmstart.models.cf import (
    CFConfig,
    confidence_matrix,
    fit_factors,
    fold_in,
    profile_rows,
)
from warmstart.models.mapping import FactorMap, fit_factor_map
from warmstart.models.moments import ItemMoments
from warmstart.models.textaware import TextAware

log = logging.getLogger(__name__)


class WarmStartConfig(ModelConfig):
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


class WarmStartRecommender(TextAware, Recommender):
    """Text-aware hybrid: ALS factors for what we have seen, text mapped into them for what we have not.

    Design. Item text (and user text, where the data has it) is embedded with a pretrained sentence
    encoder. ALS (or BPR) learns user factors P and item factors Q from interactions. A map g,
    fitted on warm items, sends an item's text embedding into the factor space (RBF-kernel ridge by
    default: which films, papers or products people pick together is not a linear function of
    their text); a map h, fitted on warm users, sends a user's own text plus the mean embedding of
    their items there. Training rows for h include truncated histories (each user's first 1, 3, 5
    items by time, random ones without timestamps) and text-only rows, so the one map serves
    zero-shot, few-shot and warm users (the DropoutNet idea, in closed form). Each entity's final
    vector is the blend

        p' = w(n) * p_cf + (1 - w(n)) * f(text),   w(n) = n / (n + lambda),

    so an entity with no interactions is pure text, and collaborative evidence takes over as it
    accumulates. lambda_items and lambda_users are chosen on a held-out slice of the training
    interactions unless given.

    Text profile. Each user also gets T, the ALS update solved with the item embeddings as fixed
    item factors: what they pick, as a linear model in text space. A score is
    z(p' . q') + beta * (1 - w_i) * z(T . e_i), each part standardised per user by its spread over
    the catalogue, so it is still one dot product of [p'/s1, beta*T/s2] and [q', (1 - w)e]. The
    text part matters most for cold items, where the mapped q' = g(e) is only a linear shadow of
    the text; beta is chosen on items held out entirely, i.e. on the case it serves.

    Visitors (`recommend_for_profile`): named items are folded into the factor space with the ALS
    update; attributes are rendered with the data's user template and go through h; free text is
    also matched directly against item text in the shared embedding space (weight `text_weight`
    on standardised scores), which is what lets "I love animated musicals" work on data whose users
    were only ever described by demographics. h's intercept is the collaborative prior, so a visitor
    who says nothing gets what an average user likes.

    Cold users. A user with few or no interactions (a visitor, or a known user with none) is
    scored z(p'.q') + a * z(the named items' co-occurrence neighbours) + b * (1 - w(n)) *
    z(popularity): three named items say most through the items people pick together with them,
    and a newcomer's safest guess is what most people like, a prior that fades with each event
    (b * popularity_fade ** n). a, b and the fade are chosen on users held out of a second fit,
    served with their earliest 0, 1, 3 and 5 items, by NDCG among the settings under which three
    events bring in at least `min_responsiveness` of their top 10: NDCG alone, on data where
    taste is mostly shared (MovieLens), picks a prior that drowns what a newcomer did.

    Warm users. Their score may add w_i * (a_w z(history's neighbours) + b_w z(popularity)) and a
    boost for new items that fit, chosen on the held-out slice (zero where they do not help, and
    within `new_item_cost` of the other side: warm terms may not bury held-out new items, the
    boost may not cost warm accuracy). The ALS settings are chosen there too (`tune_cf`).

    When to use which option: `mapper="kernel"` (default) is closed-form ridge on Nystroem RBF
    features of the item text (`kernel_landmarks` of them; exact kernel ridge below that many warm
    items); `ridge` is the linear map, faster and the safer choice with only a few hundred warm
    items; `mlp` can win with tens of thousands of warm entities and rich text. The user map h is
    ridge by default (`user_mapper`): its inputs mix text with history flags and counts.
    `cf.algorithm="bpr"` suits pure click data with no strengths; ALS with `alpha` suits counts or
    ratings. `min_responsiveness=0` chooses newcomers' blend by NDCG alone; raise
    `new_item_cost` where new items matter more than warm accuracy (news), lower it where they
    matter less. Set lambda_* yourself only if you have no interactions to validate on. Set
    `text_profile_weight=0` where item text says little about taste (it is then chosen as 0 on
    validation anyway, as on MovieLens plots); raise `text_profile_regularization` for
    short or noisy item text.
    """

    name = "warmstart"
    Config = WarmStartConfig
    config: WarmStartConfig
    serves_cold_users = True
    serves_cold_items = True

    def __init__(self, cache_dir: str | Path | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.item_embeddings = np.empty((0, 0), dtype=np.float32)
        self.user_text_embeddings = np.empty((0, 0), dtype=np.float32)
        self.user_cf = np.empty((0, 0), dtype=np.float32)  # P' (blended)
        self.item_cf = np.empty((0, 0), dtype=np.float32)  # Q' (blended)
        # Scoring vectors: users [P'/sd, beta*T/sd], items [Q', (1-w)E], so a score is one dot
        # product: the CF score plus the text-profile score, each standardised per user.
        self.user_vectors = np.empty((0, 0), dtype=np.float32)
        self.item_vectors = np.empty((0, 0), dtype=np.float32)
        # Moments of [item_vectors | item_embeddings] and the arrays they describe (item_moments)
        self._moments: tuple[weakref.ref[np.ndarray], weakref.ref[np.ndarray], ItemMoments] | None
        self._moments = None
        self._pop_z: tuple[weakref.ref[np.ndarray], np.ndarray] | None = None
        # Per item array: the buffer it is a leading view of, with rows to spare, and the rows
        # of it in use (_append_rows)
        self._row_buffers: dict[str, tuple[np.ndarray, int]] = {}
        self.cov_cf = np.empty((0, 0), dtype=np.float32)
        self.cov_text = np.empty((0, 0), dtype=np.float32)
        self.text_profile_weight_ = 0.0
        self.neighbour_sim = sp.csr_matrix((0, 0), dtype=np.float32)
        self.neighbour_weight_ = 0.0
        self.popularity_weight_ = 0.0
        self.popularity_fade_ = 1.0
        self.warm_neighbour_weight_ = 0.0
        self.warm_popularity_weight_ = 0.0
        self.new_item_boost_ = 0.0
        self.cold_user_choice_: ColdUserChoice | None = None
        self.warm_user_choice_: WarmUserChoice | None = None
        self.cf_: CFConfig = self.config.cf  # the settings fitted with (tuned, or as given)
        self.cf_choice_: CFChoice | None = None
        self.item_map: FactorMap | None = None
        self.user_map: FactorMap | None = None
        self.lambda_items_ = 0.0
        self.lambda_users_ = 0.0
        self.uses_user_text_ = False
        # Fitting only: each training interaction's place in time (1 = earliest), or None.
        self._time_rank: sp.csr_matrix | None = None

    # ---- fitting -------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        cfg = self.config
        self.item_embeddings = self.encode(catalogue.item_text)
        self.user_text_embeddings = self.encode(catalogue.user_text)
        self.uses_user_text_ = bool(np.any(self.user_text_embeddings))
        self._time_rank = _time_ranks(dataset) if cfg.history_order == "earliest" else None
        lam_i, lam_u, beta = cfg.lambda_items, cfg.lambda_users, cfg.text_profile_weight
        warm = (cfg.warm_neighbour_weight, cfg.warm_popularity_weight, cfg.new_item_boost)
        penalties: tuple[float | None, float | None] = (None, None)
        self.warm_user_choice_ = None
        self.cf_, self.cf_choice_ = cfg.cf, None
        if lam_i is None or lam_u is None or beta is None or None in warm:
            lam_i, lam_u, beta, warm = self._choose_lambdas(
                catalogue.seen, lam_i, lam_u, beta, warm
            )
            assert self.item_map is not None and self.user_map is not None
            penalties = (self.item_map.alpha, self.user_map.alpha)
        self.warm_neighbour_weight_, self.warm_popularity_weight_, self.new_item_boost_ = (
            float(x or 0.0) for x in warm
        )
        self.lambda_items_, self.lambda_users_ = float(lam_i), float(lam_u)
        self.text_profile_weight_ = float(beta)
        p, q, self.item_map, self.user_map = self._fit_core(catalogue.seen, penalties)
        self.item_cf = self._blend_items(q, catalogue.seen, self.lambda_items_)
        w = _weight(catalogue.item_counts().astype(np.float32), self.lambda_items_)
        self.cov_cf = _covariance(self.item_cf)
        self.cov_text = _covariance(self.item_embeddings)
        self.item_vectors = np.hstack([self.item_cf, (1.0 - w)[:, None] * self.item_embeddings])
        self.neighbour_sim = self._neighbour_matrix(catalogue.seen)
        a, b, fade = cfg.neighbour_weight, cfg.popularity_weight, cfg.popularity_fade
        self.cold_user_choice_ = None
        if a is None or b is None or fade is None:
            a, b, fade = self._choose_cold_user_weights(dataset, a, b, fade)
        self.neighbour_weight_, self.popularity_weight_ = float(a), float(b)
        self.popularity_fade_ = float(fade)
        self.user_cf = self._blend_users(p, catalogue.seen, self.lambda_users_)
        self.user_vectors = self._scoring_users(
            self.user_cf, self._served_text_profiles(catalogue.seen)
        )

    def _fit_core(
        self, seen: sp.csr_matrix, penalties: tuple[float | None, float | None] = (None, None)
    ) -> tuple[np.ndarray, np.ndarray, FactorMap, FactorMap]:
        """ALS factors and the two text maps; `penalties` reuses ridge alphas chosen earlier."""
        cfg = self.config
        p, q = fit_factors(seen, self.cf_)
        item_counts = np.bincount(seen.indices, minlength=seen.shape[1])
        warm_items = np.flatnonzero(item_counts > 0)
        item_map = fit_factor_map(
            self.item_embeddings[warm_items],
            q[warm_items],
            kind=cfg.mapper,
            sample_weight=np.log1p(item_counts[warm_items]).astype(np.float64),
            alphas=(penalties[0],)
            if penalties[0]
            else (cfg.kernel_alphas if cfg.mapper == "kernel" else cfg.ridge_alphas),
            hidden=cfg.mlp_hidden,
            landmarks=cfg.kernel_landmarks,
            gamma=cfg.kernel_gamma,
            seed=cfg.seed,
        )
        x, y = self._user_training_rows(seen, p)
        user_map = fit_factor_map(
            x,
            y,
            kind=cfg.user_mapper,
            alphas=(penalties[1],) if penalties[1] else cfg.ridge_alphas,
            hidden=cfg.mlp_hidden,
            seed=cfg.seed,
        )
        return p, q, item_map, user_map

    def _user_features(self, text_emb: np.ndarray, rows: sp.csr_matrix) -> np.ndarray:
        """[own text, mean item text of history, has-text, has-history, log(1+n)] per user."""
        counts = np.diff(rows.indptr).astype(np.float32)
        binary = rows.copy()
        binary.data[:] = 1.0
        hist = (
            np.asarray(binary @ self.item_embeddings, dtype=np.float32)
            / np.maximum(counts, 1)[:, None]
        )
        flags = np.stack(
            [
                np.any(text_emb, axis=1).astype(np.float32),
                (counts > 0).astype(np.float32),
                np.log1p(counts),
            ],
            axis=1,
        )
        return np.hstack([text_emb, hist, flags]).astype(np.float32)

    def _user_training_rows(
        self, seen: sp.csr_matrix, p: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warm users seen with full, truncated and empty histories, all mapped to their CF factors.

        A truncated history is the user's earliest n items when the data has timestamps (what a
        newcomer has actually done after n interactions), n random ones otherwise.
        """
        rng = np.random.default_rng(self.config.seed)
        seen = seen.tocsr()
        order = None
        if self._time_rank is not None:
            pattern = seen.copy()
            pattern.data[:] = 1.0
            order = sp.csr_matrix(self._time_rank.multiply(pattern))
        warm = np.flatnonzero(np.diff(seen.indptr) > 0)
        blocks_x, blocks_y = [], []
        full = seen[warm]
        blocks_x.append(self._user_features(self.user_text_embeddings[warm], full))
        blocks_y.append(p[warm])
        for n in self.config.history_samples:
            rows: list[int] = []
            cols: list[int] = []
            keep_users: list[int] = []
            for j, u in enumerate(warm):
                items = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
                if len(items) <= n:
                    continue
                rows.extend([len(keep_users)] * n)
                if order is None:
                    cols.extend(rng.choice(items, size=n, replace=False).tolist())
                else:
                    span = slice(order.indptr[u], order.indptr[u + 1])
                    first = np.argsort(order.data[span], kind="stable")[:n]
                    cols.extend(order.indices[span][first].tolist())
                keep_users.append(j)
            if not keep_users:
                continue
            sub = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float32), (rows, cols)),
                shape=(len(keep_users), seen.shape[1]),
            )
            users = warm[keep_users]
            blocks_x.append(self._user_features(self.user_text_embeddings[users], sub))
            blocks_y.append(p[users])
        with_text = warm[np.any(self.user_text_embeddings[warm], axis=1)]
        if with_text.size:
            empty = sp.csr_matrix((len(with_text), seen.shape[1]), dtype=np.float32)
            blocks_x.append(self._user_features(self.user_text_embeddings[with_text], empty))
            blocks_y.append(p[with_text])
        return np.vstack(blocks_x), np.vstack(blocks_y)

    def _blend_items(self, q: np.ndarray, seen: sp.csr_matrix, lam: float) -> np.ndarray:
        assert self.item_map is not None
        n = np.bincount(seen.indices, minlength=seen.shape[1]).astype(np.float32)
        w = _weight(n, lam)[:, None]
        return (w * q + (1.0 - w) * self.item_map.predict(self.item_embeddings)).astype(np.float32)

    def _blend_users(self, p: np.ndarray, seen: sp.csr_matrix, lam: float) -> np.ndarray:
        assert self.user_map is not None
        n = np.diff(seen.indptr).astype(np.float32)
        w = _weight(n, lam)[:, None]
        mapped = self.user_map.predict(self._user_features(self.user_text_embeddings, seen))
        return (w * p + (1.0 - w) * mapped).astype(np.float32)

    def _text_profiles(self, rows: sp.csr_matrix) -> np.ndarray:
        """Each user's taste in text space: ALS fold-in with the item embeddings as item factors."""
        cfg = self.config
        conf = rows.tocsr().astype(np.float32, copy=True)
        conf.data[:] = 1.0 + cfg.text_profile_alpha
        return fold_in(self.item_embeddings, conf, cfg.text_profile_regularization, reuse=True)

    def _served_text_profiles(self, rows: sp.csr_matrix) -> np.ndarray:
        """T as served: not solved where beta = 0 would multiply it away (it costs a fold-in)."""
        if self.text_profile_weight_ == 0:
            return np.zeros((rows.shape[0], self.item_embeddings.shape[1]), dtype=np.float32)
        return self._text_profiles(rows)

    def _scoring_users(
        self,
        user_cf: np.ndarray,
        profiles: np.ndarray,
        beta: float | None = None,
        cov: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """[P'/sd, beta*T/sd]: each part scaled by the spread of its scores over the catalogue."""
        beta = self.text_profile_weight_ if beta is None else beta
        cov_cf, cov_text = cov if cov is not None else (self.cov_cf, self.cov_text)
        return np.hstack(
            [_per_user_scaled(user_cf, cov_cf), beta * _per_user_scaled(profiles, cov_text)]
        ).astype(np.float32)

    def _choose_lambdas(
        self,
        seen: sp.csr_matrix,
        lam_i: float | None,
        lam_u: float | None,
        beta: float | None,
        warm: tuple[float | None, float | None, float | None] = (0.0, 0.0, 0.0),
    ) -> tuple[float, float, float, tuple[float, float, float]]:
        """Coordinate search of lambda_items, lambda_users and beta on held-out training data,
        then the warm users' neighbour and popularity weights.

        A slice of interactions is held out to choose the lambdas (recall@k of warm users) and
        the warm weights (NDCG@k), and `cold_validation_fraction` of the items are held out
        entirely to choose beta the way it is used: ranking cold items, by NDCG@k (the top of a
        newcomer's list matters most).
        """
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        coo = seen.tocoo()
        active = np.flatnonzero(np.bincount(coo.col, minlength=seen.shape[1]) > 0)
        n_cold = round(cfg.cold_validation_fraction * len(active))
        cold = rng.choice(active, size=n_cold, replace=False) if n_cold else np.empty(0, int)
        is_cold = np.isin(coo.col, cold)
        held = (rng.random(coo.nnz) < cfg.validation_fraction) & ~is_cold
        keep = ~held & ~is_cold
        shape = seen.shape
        train = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=shape)
        fallback = (lam_i or 0.0, lam_u or 0.0, beta if beta is not None else 0.0)

        def interactions(mask: np.ndarray) -> sp.csr_matrix:
            ones = np.ones(mask.sum(), np.float32)
            return sp.csr_matrix((ones, (coo.row[mask], coo.col[mask])), shape=shape)

        held_out, cold_out = interactions(held), interactions(is_cold)
        if cfg.tune_cf and held.any():
            self.cf_ = self._choose_cf(train, held_out)
        p, q, self.item_map, self.user_map = self._fit_core(train)
        profiles = self._text_profiles(train)

        @functools.lru_cache(maxsize=1)  # the searches vary one λ at a time
        def item_side(li: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
            """Scoring vectors of the items, and the covariances that scale users, for one λ."""
            qv = self._blend_items(q, train, li)
            w = _weight(np.bincount(train.indices, minlength=shape[1]).astype(np.float32), li)
            cov = (_covariance(qv), _covariance(self.item_embeddings))
            return np.hstack([qv, (1.0 - w)[:, None] * self.item_embeddings]), cov

        @functools.lru_cache(maxsize=1)  # the searches vary one λ at a time
        def user_side(lu: float) -> np.ndarray:
            return self._blend_users(p, train, lu)

        def score(
            valid: sp.csr_matrix,
            li: float,
            lu: float,
            b: float,
            items: np.ndarray,
            ndcg: bool = False,
        ) -> float:
            """recall@k (or NDCG@k) of the users with held-out interactions among `items`
            (2,000 of them at most, as in the CF search: enough to rank a few settings)."""
            users = np.flatnonzero(np.diff(valid.indptr) > 0)
            if users.size == 0:
                return 0.0
            if users.size > 2000:
                users = np.sort(np.random.default_rng([cfg.seed, 4]).choice(users, 2000, False))
            iv, cov = item_side(li)
            uv = self._scoring_users(user_side(lu)[users], profiles[users], b, cov)
            iv = iv[items]
            truth = valid[users][:, items].tocsr()
            ids, _ = topk(uv @ iv.T, cfg.validation_k, train[users][:, items])
            if ndcg:
                return NDCG(cfg.validation_k).calc(ids, truth)
            # recall capped at k (a user with more than k held out can still reach 1)
            hits = hit_matrix(ids, truth, cfg.validation_k).sum(axis=1)
            n_truth = np.minimum(np.maximum(np.diff(truth.indptr), 1), cfg.validation_k)
            return float(np.mean(hits / n_truth))

        everything = np.arange(shape[1])
        grid = cfg.lambda_grid
        b0 = beta if beta is not None else 0.0
        if not held.any():
            best_i, best_u = fallback[0], fallback[1]
        else:
            best_i = (
                lam_i
                if lam_i is not None
                else max(grid, key=lambda li: score(held_out, li, lam_u or 0.0, b0, everything))
            )
            best_u = (
                lam_u
                if lam_u is not None
                else max(grid, key=lambda lu: score(held_out, best_i, lu, b0, everything))
            )
        if beta is None:
            if is_cold.any():
                beta = max(
                    cfg.text_profile_grid,
                    key=lambda b: score(cold_out, best_i, best_u, b, cold, ndcg=True),
                )
            else:
                beta = fallback[2]
        log.info(
            "chose lambda_items=%s lambda_users=%s text_profile_weight=%s on validation",
            best_i,
            best_u,
            beta,
        )
        warm_a, warm_b, boost = warm
        if warm_a is None or warm_b is None or boost is None:
            if held.any():
                blend = self._blended_scorer(p, q, train, profiles, best_i, best_u, beta)
                warm_a, warm_b, boost = self._choose_warm_weights(
                    train, held_out, cold_out, blend, best_i, warm
                )
            else:
                warm_a, warm_b, boost = warm_a or 0.0, warm_b or 0.0, boost or 0.0
        return float(best_i), float(best_u), float(beta), (warm_a, warm_b, boost)

    def _choose_cf(self, train: sp.csr_matrix, valid: sp.csr_matrix) -> CFConfig:
        """ALS regularisation, factors and confidence weight, by NDCG@k of the factors alone on
        the held-out slice: a coordinate search in that order from the default `cf` (factors
        after regularisation: with the default's light penalty, fewer factors win only because
        they overfit less, and blur a newcomer's few clicks into what everyone likes; the fewest
        factors within 1 % of the best, as each one costs fit time), each grid
        extended once past the edge its best value sits on, within `cf_search_seconds` (past
        it, the best so far). Data with no strengths (every weight 1) skips alpha, which then
        only rescales every confidence alike, and also tries BPR."""
        cfg = self.config
        start = time.perf_counter()
        users = np.flatnonzero(np.diff(valid.indptr) > 0)
        if users.size > 2000:
            users = np.sort(np.random.default_rng([cfg.seed, 3]).choice(users, 2000, replace=False))
        truth, rows = valid[users], train[users]
        metric = NDCG(cfg.validation_k)
        memo: dict[tuple[Any, ...], float] = {}
        stopped = False

        def key(cf: CFConfig) -> tuple[Any, ...]:
            return (cf.algorithm, cf.factors, cf.regularization, cf.alpha)

        def ndcg(cf: CFConfig) -> float:
            nonlocal stopped
            if key(cf) not in memo:
                if time.perf_counter() - start > cfg.cf_search_seconds:
                    stopped = True
                    return -1.0
                # fewer sweeps than the final fit: enough to rank settings, at half the cost
                p, q = fit_factors(train, cf.model_copy(update={"iterations": 8}))
                ids, _ = topk(p[users] @ q.T, cfg.validation_k, rows)
                memo[key(cf)] = metric.calc(ids, truth)
            return memo[key(cf)]

        def tried(cf: CFConfig, name: str, values: Sequence[float]) -> list[CFConfig]:
            cast = int if name == "factors" else float
            return [cf.model_copy(update={name: cast(v)}) for v in values]

        strengths = not cfg.cf.binarize and bool(np.any(train.data != 1.0))
        axes = {
            "regularization": cfg.cf_regularization_grid,
            "factors": tuple(float(f) for f in cfg.cf_factor_grid),
            "alpha": cfg.cf_alpha_grid if strengths else (),
        }

        def pick(options: list[CFConfig], name: str) -> CFConfig:
            """The best; for factors, the fewest within 1 % of the best (each costs fit time)."""
            top = max(options, key=ndcg)
            if name != "factors":
                return top
            close = [o for o in options if ndcg(o) >= 0.99 * ndcg(top)]
            return min(close, key=lambda o: o.factors)

        best, edges = cfg.cf, []
        for name, grid in axes.items():
            if not grid:
                continue
            best = pick([best, *tried(best, name, grid)], name)
            value = float(getattr(best, name))
            more = _extend_once(grid, value, upper=True) or _extend_once(grid, value, upper=False)
            if more:
                best = pick([best, *tried(best, name, grid), *tried(best, name, more)], name)
                if float(getattr(best, name)) == more[-1]:
                    edges.append(name)
        if not strengths and cfg.cf.algorithm == "als":
            best = max([best, best.model_copy(update={"algorithm": "bpr"})], key=ndcg)
        self.cf_choice_ = CFChoice(
            algorithm=best.algorithm,
            factors=best.factors,
            regularization=best.regularization,
            alpha=best.alpha,
            ndcg=memo.get(key(best), float("nan")),
            ndcg_default=memo.get(key(cfg.cf), float("nan")),
            fits=len(memo),
            seconds=round(time.perf_counter() - start, 2),
            stopped_by_budget=stopped,
            at_grid_edge=tuple(edges),
        )
        log.info("collaborative filtering: %s", self.cf_choice_.summary())
        return best

    def _blended_scorer(
        self,
        p: np.ndarray,
        q: np.ndarray,
        train: sp.csr_matrix,
        profiles: np.ndarray,
        lam_i: float,
        lam_u: float,
        beta: float,
    ) -> Callable[[np.ndarray], np.ndarray]:
        """Scores of the given users over every item, as a model fitted on `train` with these
        lambdas and beta would give them (before any blend)."""
        qv = self._blend_items(q, train, lam_i)
        w = _weight(np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32), lam_i)
        cov = (_covariance(qv), _covariance(self.item_embeddings))
        iv = np.hstack([qv, (1.0 - w)[:, None] * self.item_embeddings])
        pv = self._blend_users(p, train, lam_u)

        def scores(users: np.ndarray) -> np.ndarray:
            return np.asarray(self._scoring_users(pv[users], profiles[users], beta, cov) @ iv.T)

        return scores

    def _choose_warm_weights(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix,
        new_valid: sp.csr_matrix,
        scores: Callable[[np.ndarray], np.ndarray],
        lam_i: float,
        given: tuple[float | None, float | None, float | None],
    ) -> tuple[float, float, float]:
        """Warm users' neighbour and popularity weights and the new-item boost.

        The weights: the best NDCG@k of the held-out interactions of (up to 1,000) users, on
        `warm_grid`, among those that cost the users' interactions with the items held out
        entirely (new items, placed by text alone, ranked among every item) at most
        `new_item_cost` of their NDCG; zero where the terms do not help. Then the boost: the
        best NDCG@k of those new-item interactions among the boosts that cost the warm ones at
        most `new_item_cost`: as many fitting new items as a list can take without getting
        worse at what it already did. Grids are extended once past their top edge.
        """
        cfg = self.config
        both = valid + new_valid
        users = np.flatnonzero(np.diff(both.indptr) > 0)
        if users.size > 1000:
            users = np.sort(np.random.default_rng([cfg.seed, 2]).choice(users, 1000, replace=False))
        base = scores(users)
        rows = train[users]
        counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
        w = _weight(counts, lam_i)
        knn = self._neighbour_matrix(train)
        near = w * _standardise_sparse(binary(rows) @ knn, None)
        z_pop = w * standardise(np.log1p(counts)[None, :])
        fresh = (1.0 - w)[None, :] * np.maximum(standardise(base), 0.0)
        truths = {"warm": valid[users], "new": new_valid[users]}
        metric = NDCG(cfg.validation_k)
        memo: dict[tuple[str, float, float, float], float] = {}

        def ndcg(truth: str, weights: tuple[float, float, float]) -> float:
            key = (truth, *weights)
            if key not in memo:
                wa, wb, boost = weights
                blended = base + wa * near + wb * z_pop + boost * fresh
                ids, _ = topk(blended, cfg.validation_k, rows)
                memo[key] = metric.calc(ids, truths[truth])
            return memo[key]

        def search(axes: list[tuple[float, ...]], truth: str) -> tuple[float, float, float]:
            def best_of(grid: list[tuple[float, float, float]]) -> tuple[float, float, float]:
                if truth == "warm":  # terms that keep new items where they were, near enough
                    floor = (1.0 - cfg.new_item_cost) * ndcg("new", (0.0, 0.0, 0.0))
                    given_both = a is not None and b is not None
                    ok = [g for g in grid if given_both or not new_items or ndcg("new", g) >= floor]
                    return max(ok or [(0.0, 0.0, 0.0)], key=lambda g: ndcg("warm", g))
                floor = (1.0 - cfg.new_item_cost) * ndcg("warm", (*grid[0][:2], 0.0))
                ok = [g for g in grid if ndcg("warm", g) >= floor] or [(*grid[0][:2], 0.0)]
                return max(ok, key=lambda g: (ndcg("new", g), -g[2]))

            grid = [(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]]
            best = best_of(grid)
            for axis in range(3):
                if len(axes[axis]) > 1:
                    more = _extend_once(axes[axis], best[axis], upper=True)
                    axes[axis] = tuple(sorted({*axes[axis], *more}))
            return best_of([(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]])

        names = ("warm_neighbour_weight", "warm_popularity_weight", "new_item_boost")
        a, b, boost = given
        axes = [
            (a,) if a is not None else cfg.warm_grid,
            (b,) if b is not None else cfg.warm_grid,
            (0.0,),
        ]
        new_items = new_valid.nnz > 0
        wa, wb, _ = search(axes, "warm")
        edges = [
            name
            for name, grid, value in zip(names[:2], axes[:2], (wa, wb), strict=True)
            if len(grid) > 1 and value == max(grid)
        ]
        boost_axis = (boost,) if boost is not None else cfg.new_item_grid if new_items else (0.0,)
        axes[:2] = [(wa,), (wb,)]
        axes[2] = boost_axis
        best = (wa, wb, boost) if boost is not None else search(axes, "new")
        if len(axes[2]) > 1 and best[2] == max(axes[2]):
            edges.append(names[2])
        self.warm_user_choice_ = WarmUserChoice(
            neighbour_weight=float(best[0]),
            popularity_weight=float(best[1]),
            new_item_boost=float(best[2]),
            ndcg=ndcg("warm", (best[0], best[1], 0.0)),
            ndcg_without=ndcg("warm", (0.0, 0.0, 0.0)),
            ndcg_boosted=ndcg("warm", best),
            ndcg_new=ndcg("new", best),
            ndcg_new_without=ndcg("new", (best[0], best[1], 0.0)),
            users=int(users.size),
            at_grid_edge=tuple(edges),
        )
        log.info("warm users: %s", self.warm_user_choice_.summary())
        return float(best[0]), float(best[1]), float(best[2])

    def _choose_cold_user_weights(
        self, dataset: Dataset, a: float | None, b: float | None, fade: float | None
    ) -> tuple[float, float, float]:
        """Neighbour weight, popularity weight and its per-event fade for cold users.

        Chosen on users held out of a refit, served as visitors with their own text and their
        earliest n items (random ones without timestamps) for n = 0 and each of
        `cold_user_revealed`: the best mean NDCG@k of the rest of their items, among the weights
        under which their events steer (`min_responsiveness`; see `ColdUserChoice`). NDCG on
        data like MovieLens keeps rewarding a heavier popularity prior, which is how a newcomer
        who clicked five cartoons ends up with ten blockbusters: the constraint is what stops it.
        A grid whose best value lies on its upper edge (or, for the fade, its lower one) is
        extended once, and a choice still on an edge is reported.
        """
        cfg = self.config
        validation = self._cold_user_cases(dataset)
        if validation is None:  # too few to choose anything on: no cold-user blending
            self.cold_user_choice_ = None
            return (a if a is not None else 0.0, b if b is not None else 0.0, fade or 1.0)
        sub, cases = validation
        search = _ColdBlendSearch(sub, cases, cfg.validation_k, cfg.responsiveness_events)
        axes = [
            (a,) if a is not None else cfg.neighbour_grid,
            (b,) if b is not None else cfg.popularity_grid,
            (fade,) if fade is not None else cfg.popularity_fade_grid,
        ]
        free = [a is None, b is None, fade is None]
        best = search.best(axes, cfg.min_responsiveness)
        for axis, grid in enumerate(axes):
            more = _extend_once(grid, best[axis], upper=axis < 2) if free[axis] else ()
            if more:
                # the extended axis, the others held at their best (not the whole grid again)
                axes[axis] = tuple(sorted({*grid, *more}, reverse=axis == 2))
                line = [(v,) if i != axis else axes[axis] for i, v in enumerate(best)]
                best = search.best(line, cfg.min_responsiveness)
        edges = [
            name
            for name, grid, value, is_free, upper in zip(
                ("neighbour_weight", "popularity_weight", "popularity_fade"),
                axes,
                best,
                free,
                (True, True, False),
                strict=True,
            )
            if is_free and len(grid) > 1 and value == (max(grid) if upper else min(grid))
        ]
        ndcg, responsiveness = search.measure(best)
        self.cold_user_choice_ = ColdUserChoice(
            neighbour_weight=best[0],
            popularity_weight=best[1],
            popularity_fade=best[2],
            ndcg=ndcg,
            responsiveness=responsiveness,
            min_responsiveness=cfg.min_responsiveness,
            users=cases[0][2].shape[0],
            at_grid_edge=tuple(edges),
        )
        log.info("cold users: %s", self.cold_user_choice_.summary())
        return best

    def _cold_user_cases(
        self, dataset: Dataset
    ) -> (
        tuple[WarmStartRecommender, dict[int, tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]]]
        | None
    ):
        """The validation `_choose_cold_user_weights` decides on, or None with under 20 users.

        A refit without the held-out users, and per number n of revealed items (0, each of
        `cold_user_revealed` and `responsiveness_events`): their unblended scores, the revealed
        items as rows, and the rest of their items as the truth. Counts that leave fewer than 20
        users with two items to spare are dropped, largest first.
        """
        cfg = self.config
        counts = sorted({0, *cfg.cold_user_revealed, cfg.responsiveness_events})
        user_counts = dataset.user_counts()

        def held_out(n: int) -> int:
            """How many users to hold out, among those with n revealed and 3 items to spare:
            `cold_user_fraction` of them, but at least 100 (up to 30 % of them: a choice
            among ~170 blends on a few dozen users fits their noise) and at most 500."""
            eligible = int(np.sum(user_counts > n + 2))
            share = round(cfg.cold_user_fraction * eligible)
            return min(max(share, min(100, round(0.3 * eligible))), 500)

        while counts and held_out(counts[-1]) < 20:
            counts.pop()
        if not counts:
            return None
        rng = np.random.default_rng([cfg.seed, 1])
        eligible = np.flatnonzero(user_counts > counts[-1] + 2)
        users = np.sort(rng.choice(eligible, size=held_out(counts[-1]), replace=False))
        held = np.isin(dataset.users, users)
        sub = self._refit_model(
            lambda_items=self.lambda_items_,
            lambda_users=self.lambda_users_,
            text_profile_weight=self.text_profile_weight_,
            neighbour_weight=0.0,
            popularity_weight=0.0,
            popularity_fade=1.0,
            warm_neighbour_weight=self.warm_neighbour_weight_,
            warm_popularity_weight=self.warm_popularity_weight_,
            new_item_boost=self.new_item_boost_,
            cf=self.cf_.model_dump(),
            tune_cf=False,
        )
        sub.fit(dataset.with_interactions(~held))
        texts = dataset.user_texts()
        order = {int(u): np.flatnonzero(dataset.users == u) for u in users}
        for u, pos in order.items():
            if dataset.timestamps is None:
                order[u] = rng.permutation(pos)
            else:
                order[u] = pos[np.argsort(dataset.timestamps[pos], kind="stable")]
        cases, asked = {}, {}
        for n in counts:
            queries = [
                ProfileQuery(text=None, attribute_text=texts[u], items=dataset.items[order[u][:n]])
                for u in order
            ]
            truth_rows = np.repeat(np.arange(len(order)), [len(p) - n for p in order.values()])
            truth_cols = np.concatenate([dataset.items[p[n:]] for p in order.values()])
            truth = sp.csr_matrix(
                (np.ones(len(truth_rows), np.float32), (truth_rows, truth_cols)),
                shape=(len(order), dataset.n_items),
            )
            rows = profile_rows(queries, dataset.n_items)
            cases[n] = (sub.score_profiles(queries), rows, truth)
            asked[n] = queries
        if self.config.lambda_users is None and len(cases) > 1:
            lam = self._choose_lambda_users(sub, cases, asked)
            if lam != sub.lambda_users_:
                sub.lambda_users_ = self.lambda_users_ = lam
                cases = {n: (sub.score_profiles(asked[n]), *cases[n][1:]) for n in cases}
        return sub, cases

    def _choose_lambda_users(
        self,
        sub: WarmStartRecommender,
        cases: Mapping[int, tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]],
        asked: Mapping[int, list[ProfileQuery]],
    ) -> float:
        """lambda_users where it matters: for users with a few events, whose vector blends the
        fold-in of their items with the text map by w(n) = n / (n + lambda). The held-out slice
        of warm users (where w is near 1 whatever lambda) cannot tell; the held-out newcomers,
        by the NDCG@k of their unblended scores after 1, 3 and 5 events, can."""
        metric, k = NDCG(self.config.validation_k), self.config.validation_k
        chosen = sub.lambda_users_

        def ndcg(lam: float) -> float:
            sub.lambda_users_ = lam
            values = []
            for n, (_, rows, truth) in cases.items():
                if n:
                    ids, _ = topk(sub.score_profiles(asked[n]), k, rows)
                    values.append(metric.calc(ids, truth))
            return float(np.mean(values))

        grid = sorted({chosen, *self.config.lambda_grid})
        best = max(grid, key=ndcg)
        sub.lambda_users_ = chosen
        log.info("chose lambda_users=%s on held-out newcomers", best)
        return float(best)

    def _refit_model(self, **overrides: Any) -> WarmStartRecommender:
        """A plain warmstart with this model's settings and encoder, for a validation refit."""
        params = {
            name: value
            for name, value in self.config.model_dump().items()
            if name in WarmStartConfig.model_fields
        }
        sub = WarmStartRecommender(cache_dir=self.cache_dir, **{**params, **overrides})
        sub.set_encoder(self.encoder)
        return sub

    def fit_report(self) -> list[str]:
        lines = [*self._text_warnings()]
        lines += [
            f"lambda_items={self.lambda_items_:g} lambda_users={self.lambda_users_:g} "
            f"text_profile_weight={self.text_profile_weight_:g}"
        ]
        if self.cf_choice_ is not None:
            lines.append(f"collaborative filtering: {self.cf_choice_.summary()}")
        else:
            cf = self.cf_
            lines.append(
                f"collaborative filtering: {cf.algorithm} factors={cf.factors} "
                f"regularization={cf.regularization:g} alpha={cf.alpha:g} (given)"
            )
        if self.warm_user_choice_ is not None:
            lines.append(f"warm users: {self.warm_user_choice_.summary()}")
        else:
            lines.append(
                f"warm users: warm_neighbour_weight={self.warm_neighbour_weight_:g} "
                f"warm_popularity_weight={self.warm_popularity_weight_:g} "
                f"new_item_boost={self.new_item_boost_:g} (given)"
            )
        choice = self.cold_user_choice_
        if choice is not None:
            lines.append(f"cold users: {choice.summary()}")
        else:
            lines.append(
                f"cold users: neighbour_weight={self.neighbour_weight_:g} popularity_weight="
                f"{self.popularity_weight_:g} popularity_fade={self.popularity_fade_:g} (given, "
                "or too few users to choose on)"
            )
        return lines

    def _text_warnings(self) -> list[str]:
        """Warnings when item text can say little: mostly empty, or a few words per item."""
        texts = self.catalogue.item_text
        if not texts:
            return []
        words = np.array([len(t.split()) if t else 0 for t in texts])
        out = []
        empty = float(np.mean(words == 0))
        if empty > 0.2:
            out.append(
                f"warning: {empty:.0%} of items have no text; they can only be placed by "
                "their interactions, and new items without text cannot be recommended"
            )
        median = float(np.median(words[words > 0])) if np.any(words) else 0.0
        if 0 < median < 8:
            out.append(
                f"warning: item text is short (median {median:g} words): text says little "
                "about taste, so new items and newcomers lean on popularity and neighbours"
            )
        return out

    # ---- scoring -------------------------------------------------------------------------
    def _score_users(self, users: np.ndarray) -> np.ndarray:
        scores = self.user_vectors[users] @ self.item_vectors.T
        counts = self.catalogue.user_counts()[users]
        warm = np.flatnonzero(counts > 0)
        if warm.size and self.blends_warm_users:
            scores[warm] = self._warm_blend(scores[warm], users[warm])
        cold = np.flatnonzero(counts == 0)
        if cold.size:
            empty = sp.csr_matrix((cold.size, scores.shape[1]), dtype=np.float32)
            scores[cold] = self._cold_blend(scores[cold], empty)
            # no interactions and no text the model reads: popularity, as for such visitors
            if self.uses_user_text_:
                cold = cold[~np.any(self.user_text_embeddings[users[cold]], axis=1)]
            scores[cold] = self._popularity_z()
        return scores

    @property
    def blends_warm_users(self) -> bool:
        """Whether warm users' scores add neighbour or popularity terms to the dot product."""
        return bool(
            self.warm_neighbour_weight_ or self.warm_popularity_weight_ or self.new_item_boost_
        )

    def score_warm_user(self, user: int, candidates: np.ndarray) -> np.ndarray:
        """A warm user's scores for `candidates` only (internal ids), equal to the full ones:
        the added terms are standardised over every item, as `_score_users` does."""
        scores = self.user_vectors[[user]] @ self.item_vectors[candidates].T
        return self._warm_blend(scores, np.array([user]), candidates)

    def history_neighbours(self, user: int) -> np.ndarray:
        """Internal ids of the items near a trained user's history (the warm blend's term)."""
        return np.asarray(self._neighbour_rows(self.catalogue.seen[[user]]).indices, np.int64)

    def _warm_blend(
        self, scores: np.ndarray, users: np.ndarray, columns: np.ndarray | None = None
    ) -> np.ndarray:
        """s + w_i (a_w z(history's neighbours) + b_w z(popularity)) + boost (1 - w_i) max(z(s), 0).

        The scores are already on a per-user unit scale (the scoring vectors are divided by their
        spread), so the terms add as the cold blend's do. w_i = n_i / (n_i + lambda_items) is the
        item's collaborative weight: an item with no interactions has no neighbours and no
        popularity yet, which says nothing against it, so it gets the average item's terms (0)
        and competes on its text-placed score, raised in proportion to how well it fits (the
        boost), so new items that fit reach lists where warm items have those terms.
        """
        a, b = self.warm_neighbour_weight_, self.warm_popularity_weight_
        out = np.array(scores, dtype=np.float32)
        counts = self.catalogue.item_counts().astype(np.float32)
        w = _weight(counts if columns is None else counts[columns], self.lambda_items_)
        if a:
            near = self._neighbour_rows(self.catalogue.seen[users])
            out += a * w * _standardise_sparse(near, columns)
        if b:
            z_pop = self._popularity_z()
            out += b * w * (z_pop if columns is None else z_pop[:, columns])
        if self.new_item_boost_:
            if columns is None:
                z = standardise(scores)
            else:
                d = self.item_vectors.shape[1]
                mean, sd = self.item_moments().spread(self.user_vectors[users], slice(0, d))
                z = (scores - mean[:, None]) / (sd[:, None] + 1e-9)
            out += self.new_item_boost_ * (1.0 - w) * np.maximum(z, 0.0)
        return out

    def _cold_blend(
        self,
        scores: np.ndarray,
        rows: sp.csr_matrix,
        weights: tuple[float, float, float] | None = None,
        popularity: np.ndarray | None = None,
        described: np.ndarray | None = None,
        columns: _Columns | None = None,
        near: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """z(score) + a z(named items' neighbours) + b fade^n (1 - w(n)) z(popularity), per user.

        Users who `described` their taste in free text get no popularity prior: what they asked
        for outweighs what most people like. With `columns`, `scores` holds only those items
        (see `_Columns`); the neighbour and popularity terms are still standardised exactly.
        `near` is `_neighbour_rows(rows)` where the caller has it already.
        """
        a, b, rho = (
            (self.neighbour_weight_, self.popularity_weight_, self.popularity_fade_)
            if weights is None
            else weights
        )
        if a == 0 and b == 0:
            return scores
        n = np.diff(rows.indptr).astype(np.float32)
        out = standardise(scores) if columns is None else columns.standardise(scores)
        named = np.flatnonzero(n > 0)
        if a and named.size:
            near = self._neighbour_rows(rows) if near is None else near
            if named.size < near.shape[0]:
                near = near[named]
            out[named] += a * _standardise_sparse(near, None if columns is None else columns.cols)
        if b:
            fade = popularity_fade(n, rho, self.lambda_users_)
            if described is not None:
                fade[described] = 0.0
            if popularity is None:
                z_pop = self._popularity_z()
            else:
                z_pop = standardise(popularity[None, :].astype(np.float32))
            out += b * fade[:, None] * (z_pop if columns is None else z_pop[:, columns.cols])
        return out

    def _neighbour_matrix(self, seen: sp.csr_matrix) -> sp.csr_matrix:
        """Each item's `neighbours` nearest by cosine of who picked them, each neighbour j's
        similarity divided by n_j ** neighbour_popularity_penalty: what people specifically pick
        with an item, not what everybody picks anyway (the popularity term's job)."""
        cfg = self.config
        sim = cosine_knn(binary(seen), cfg.neighbours)
        if cfg.neighbour_popularity_penalty:
            counts = np.maximum(np.bincount(seen.indices, minlength=seen.shape[1]), 1)
            penalty = counts.astype(np.float32) ** -cfg.neighbour_popularity_penalty
            sim = sp.csr_matrix(sim @ sp.diags(penalty), dtype=np.float32)
        return sim

    def _neighbour_rows(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """Per row, the summed neighbour similarities of its named items (float32 CSR)."""
        return sp.csr_matrix(binary(rows) @ self.neighbour_sim, dtype=np.float32)

    def _popularity_z(self) -> np.ndarray:
        """Standardised popularity (1, n_items), kept while the popularity array stays the same."""
        pop = self._pop()
        held = self._pop_z
        if held is None or held[0]() is not pop:
            held = (weakref.ref(pop), standardise(pop[None, :].astype(np.float32)))
            self._pop_z = held
        return held[1]

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        return self.score_profile_parts(self.profile_parts(queries))

    def profile_parts(self, queries: Sequence[ProfileQuery]) -> ProfileParts:
        """What scoring visitors needs besides the items: their scoring vectors (ANN queries for
        the first term), free-text embeddings, and named-item rows."""
        assert self.user_map is not None
        rows = profile_rows(queries, self.catalogue.n_items)
        n = np.diff(rows.indptr).astype(np.float32)
        conf = confidence_matrix(rows, self.cf_)
        p_cf = fold_in(self.item_cf, conf, self.cf_.regularization, reuse=True)
        own = [q.user_text for q in queries] if self.uses_user_text_ else [None] * len(queries)
        features = self._user_features(self.encode(own), rows)
        free = [j for j, q in enumerate(queries) if q.text]
        emb = np.zeros((0, self.item_embeddings.shape[1]), dtype=np.float32)
        if free:
            # Free text describes what the visitor likes, as item text does: it joins the history
            # slot as one more (pseudo-)item, the case the user map saw in its 1-item training rows.
            emb = self.encode([queries[j].text for j in free])
            d = self.item_embeddings.shape[1]
            hist = features[free, d : 2 * d] * n[free, None] + emb
            features[free, d : 2 * d] = hist / (n[free, None] + 1.0)
            features[free, -2] = 1.0
            features[free, -1] = np.log1p(n[free] + 1.0)
        p_text = self.user_map.predict(features)
        w = _weight(n, self.lambda_users_)[:, None]
        users = self._scoring_users(w * p_cf + (1.0 - w) * p_text, self._served_text_profiles(rows))
        described = np.array([bool(q.text) for q in queries], dtype=bool)
        near = self._neighbour_rows(rows) if self.neighbour_weight_ and rows.nnz else None
        return ProfileParts(
            rows=rows,
            users=users,
            free=np.asarray(free, dtype=np.int64),
            text=emb,
            described=described,
            near=near,
            unknown=np.array(
                [not (q.items.size or q.text or own[j]) for j, q in enumerate(queries)], dtype=bool
            ),
        )

    def score_profile_parts(
        self, parts: ProfileParts, candidates: np.ndarray | None = None
    ) -> np.ndarray:
        """Visitors' scores for every item, or only for `candidates` (internal ids).

        Candidate scores equal the full ones: each dense term's mean and spread over the whole
        catalogue come from `item_moments`, not from scoring every item, so a service scores a
        few hundred ANN candidates instead of 100,000 items. The named items' neighbours and
        popularity are cheap to standardise over every item and are taken exactly as well.
        """
        if candidates is None:
            scores = parts.users @ self.item_vectors.T
            if parts.free.size:
                scores[parts.free] = self._with_text_match(scores[parts.free], parts.text)
            out = self._cold_blend(scores, parts.rows, described=parts.described, near=parts.near)
            if parts.unknown is not None and parts.unknown.any():
                out[parts.unknown] = self._popularity_z()
            return np.asarray(out, dtype=np.float32)
        moments, weight = self.item_moments(), self.config.text_weight
        d = self.item_vectors.shape[1]
        own, text = slice(0, d), slice(d, moments.dim)
        scores = parts.users @ self.item_vectors[candidates].T
        mean, sd = moments.spread(parts.users, own)
        sd = sd + 1e-9
        if parts.free.size:
            f = parts.free
            t_mean, t_sd = moments.spread(parts.text, text)
            t_sd = t_sd + 1e-9
            texts = parts.text @ self.item_embeddings[candidates].T
            z_text = (texts - t_mean[:, None]) / t_sd[:, None]
            scores[f] = (scores[f] - mean[f, None]) / sd[f, None] + weight * z_text
            # The sum of two standardised terms has mean 0 and variance 1 + w² + 2w·corr.
            corr = moments.covariance(parts.users[f], own, parts.text, text) / (sd[f] * t_sd)
            mean[f] = 0.0
            sd[f] = np.sqrt(np.maximum(1.0 + weight**2 + 2.0 * weight * corr, 0.0)) + 1e-9
        columns = _Columns(candidates, mean, sd)
        out = self._cold_blend(
            scores, parts.rows, described=parts.described, columns=columns, near=parts.near
        )
        if parts.unknown is not None and parts.unknown.any():
            out[parts.unknown] = self._popularity_z()[:, candidates]
        return np.asarray(out, dtype=np.float32)

    def item_moments(self) -> ItemMoments:
        """Moments of [item_vectors | item_embeddings] over every item (see `ItemMoments`).

        Computed on first use (about a second at 100,000 items on 2 cores), then updated as
        `add_items` and `update_item_texts` change the arrays; recomputed if anything else
        replaced them.
        """
        moments = self._moments_if_current()
        if moments is None:
            moments = ItemMoments(self.item_vectors, self.item_embeddings)
            self._keep_moments(moments)
        return moments

    def _moments_if_current(self) -> ItemMoments | None:
        """The kept moments if they describe the current arrays (computes nothing)."""
        held = self._moments
        if (
            held is None
            or held[0]() is not self.item_vectors
            or held[1]() is not self.item_embeddings
        ):
            return None
        return held[2]

    def _keep_moments(self, moments: ItemMoments | None) -> None:
        """`moments`, already updated, now describe the current arrays."""
        if moments is not None:
            self._moments = (
                weakref.ref(self.item_vectors),
                weakref.ref(self.item_embeddings),
                moments,
            )

    def _score_texts(self, texts: Sequence[str]) -> np.ndarray:
        assert self.item_map is not None
        emb = self.encode(list(texts))
        cf = cosine(self.item_map.predict(emb), self.item_cf)
        return self._with_text_match(cf, emb)

    def _similar_scores(self, items: np.ndarray) -> np.ndarray:
        return cosine(self.item_cf[items], self.item_cf)

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        return cosine(self.item_cf[[item]], self.item_cf[others])[0]

    def _items_similarity(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        return cosine(self.item_cf[items], self.item_cf[others])

    def _explain_notes(self, item: int, history: np.ndarray) -> list[str]:
        n = int(self.catalogue.item_counts()[item])
        if n == 0:
            return ["new item: placed by its text alone"]
        w = float(_weight(np.array([n], dtype=np.float32), self.lambda_items_)[0])
        if w < 0.5:
            return [f"few interactions ({n}): mostly placed by its text ({1 - w:.0%})"]
        return []

    # ---- catalogue growth ----------------------------------------------------------------
    def _add_item_rows(self, texts: list[str]) -> None:
        """New items get their text embedding mapped into the factor space: recommendable at once."""
        assert self.item_map is not None
        emb = self.encode(texts)
        moments = self._moments_if_current()
        self._append_rows("item_embeddings", emb)
        mapped = self.item_map.predict(emb).astype(np.float32)
        self._append_rows("item_cf", mapped)
        vectors = np.hstack([mapped, emb]).astype(np.float32, copy=False)
        self._append_rows("item_vectors", vectors)
        if moments is not None:
            moments.add(np.hstack([vectors, emb]))
        self._keep_moments(moments)
        # New items have no neighbours yet: empty rows and columns, the stored entries unchanged
        # (no COO round trip: at 100,000 items that cost 60 ms per added item).
        n = self.catalogue.n_items + len(texts)
        sim = self.neighbour_sim.tocsr()
        indptr = np.concatenate(
            [sim.indptr, np.full(n - sim.shape[0], sim.indptr[-1], dtype=sim.indptr.dtype)]
        )
        self.neighbour_sim = sp.csr_matrix((sim.data, sim.indices, indptr), shape=(n, n))

    def _append_rows(self, name: str, rows: np.ndarray) -> None:
        """Replace the item array `name` by itself with `rows` below, without copying it.

        Items arrive one POST at a time, and copying three 100,000-row arrays per item took
        most of an item's 57 ms. The array is a leading view of a buffer with rows to
        spare; a new view takes the added rows, and rows an older view shows are never written,
        so whoever holds that view still reads the same values. A full buffer grows by an
        eighth (amortised, a few row copies per added row). A new view is a new object, so the
        moments see a new array; the fold-in keeps YᵀY per buffer and counts the new rows only.
        """
        current: np.ndarray = getattr(self, name)
        n, k = current.shape[0], rows.shape[0]
        buf, used = self._row_buffers.get(name, (None, -1))
        if (
            buf is None
            or current.base is not buf
            or current.ctypes.data != buf.ctypes.data
            or used != n  # not the newest view of the buffer: its next rows may be taken
            or buf.shape[0] < n + k
        ):
            spare = max(n // 8, 256)
            buf = np.empty((n + k + spare, *current.shape[1:]), dtype=current.dtype)
            buf[:n] = current
        buf[n : n + k] = rows
        self._row_buffers[name] = (buf, n + k)
        setattr(self, name, buf[: n + k])

    def update_item_texts(
        self, items: np.ndarray, texts: Sequence[str], titles: Sequence[str] | None = None
    ) -> None:
        """Give existing items (internal ids) new text, e.g. an edited product description.

        Only the text-derived part of each vector moves: q' = w q + (1 - w) g(e) keeps its
        collaborative part w q, and g(e) is replaced by g(e_new), so an item with many
        interactions barely moves and a new one is placed by its new text alone.
        """
        assert self.item_map is not None
        items = np.asarray(items, dtype=np.int64)
        if len(texts) != len(items):
            raise ValueError(f"{len(texts)} texts for {len(items)} items")
        if any(not (t and t.strip()) for t in texts):
            raise ValueError("an item needs text to be recommendable")
        new = self.encode(list(texts))
        moments = self._moments_if_current()
        changed = np.unique(items)
        before = np.hstack([self.item_vectors[changed], self.item_embeddings[changed]])
        old_mapped = self.item_map.predict(self.item_embeddings[items])
        new_mapped = self.item_map.predict(new)
        counts = self.catalogue.item_counts()[items].astype(np.float32)
        fade = (1.0 - _weight(counts, self.lambda_items_))[:, None]
        item_cf = self.item_cf.copy()
        item_cf[items] += (fade * (new_mapped - old_mapped)).astype(np.float32)
        embeddings = self.item_embeddings.copy()
        embeddings[items] = new
        vectors = self.item_vectors.copy()
        vectors[items] = np.hstack([item_cf[items], fade * new])
        self.item_cf, self.item_embeddings, self.item_vectors = item_cf, embeddings, vectors
        if moments is not None:
            moments.replace(before, np.hstack([vectors[changed], embeddings[changed]]))
        self._keep_moments(moments)
        labels = [short_label(t) for t in (titles if titles is not None else texts)]
        self._catalogue = self.catalogue.with_item_texts(items, [t.strip() for t in texts], labels)

    # ---- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        assert self.item_map is not None and self.user_map is not None
        return {
            "item_embeddings": self.item_embeddings,
            "user_text_embeddings": self.user_text_embeddings,
            "user_vectors": self.user_vectors,
            "item_vectors": self.item_vectors,
            "user_cf": self.user_cf,
            "item_cf": self.item_cf,
            "cov_cf": self.cov_cf,
            "cov_text": self.cov_text,
            "lambdas": np.asarray(
                [
                    self.lambda_items_,
                    self.lambda_users_,
                    self.text_profile_weight_,
                    self.neighbour_weight_,
                    self.popularity_weight_,
                    self.popularity_fade_,
                    self.warm_neighbour_weight_,
                    self.warm_popularity_weight_,
                    self.new_item_boost_,
                ],
                dtype=np.float64,
            ),
            **(
                {"cold_user_choice": np.asarray(self.cold_user_choice_.to_json())}
                if self.cold_user_choice_ is not None
                else {}
            ),
            "cf": np.asarray(self.cf_.model_dump_json()),
            **(
                {"cf_choice": np.asarray(self.cf_choice_.to_json())}
                if self.cf_choice_ is not None
                else {}
            ),
            **(
                {"warm_user_choice": np.asarray(self.warm_user_choice_.to_json())}
                if self.warm_user_choice_ is not None
                else {}
            ),
            **csr_state(self.neighbour_sim),
            "uses_user_text": np.asarray(self.uses_user_text_),
            **self.item_map.to_arrays("item_map"),
            **self.user_map.to_arrays("user_map"),
        }

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.item_embeddings = arrays["item_embeddings"]
        self.user_text_embeddings = arrays["user_text_embeddings"]
        self.user_vectors = arrays["user_vectors"]
        self.item_vectors = arrays["item_vectors"]
        self.user_cf = arrays["user_cf"]
        self.item_cf = arrays["item_cf"]
        self.cov_cf = arrays["cov_cf"]
        self.cov_text = arrays["cov_text"]
        lam_i, lam_u, beta, a, b, fade, warm_a, warm_b, boost = (
            float(x) for x in arrays["lambdas"]
        )
        self.warm_neighbour_weight_, self.warm_popularity_weight_ = warm_a, warm_b
        self.new_item_boost_ = boost
        self.lambda_items_, self.lambda_users_, self.text_profile_weight_ = lam_i, lam_u, beta
        self.neighbour_weight_, self.popularity_weight_, self.popularity_fade_ = a, b, fade
        choice = arrays.get("cold_user_choice")
        self.cold_user_choice_ = None if choice is None else ColdUserChoice.from_json(str(choice))
        self.cf_ = CFConfig.model_validate_json(str(arrays["cf"]))
        choice = arrays.get("cf_choice")
        self.cf_choice_ = None if choice is None else CFChoice.from_json(str(choice))
        choice = arrays.get("warm_user_choice")
        self.warm_user_choice_ = None if choice is None else WarmUserChoice.from_json(str(choice))
        self.neighbour_sim = csr_from_state(arrays)
        self.uses_user_text_ = bool(arrays["uses_user_text"])
        self.item_map = FactorMap.from_arrays(arrays, "item_map")
        self.user_map = FactorMap.from_arrays(arrays, "user_map")

    def _check_state(self) -> None:
        """Every array has a row per catalogue item or user, dimensions agree, values finite."""
        cat = self.catalogue
        problems: list[str] = []
        rows = {
            "item_embeddings": cat.n_items,
            "item_cf": cat.n_items,
            "item_vectors": cat.n_items,
            "user_text_embeddings": cat.n_users,
            "user_cf": cat.n_users,
            "user_vectors": cat.n_users,
        }
        for name, n in rows.items():
            array = getattr(self, name)
            if array.ndim != 2 or array.shape[0] != n:
                problems.append(f"{name} has shape {array.shape}, expected {n} rows")
            elif not np.all(np.isfinite(array)):
                problems.append(f"{name} holds NaN or infinite values")
        if not problems:
            pairs = [
                ("item_cf", "user_cf"),
                ("item_vectors", "user_vectors"),
                ("item_embeddings", "user_text_embeddings"),
            ]
            for a, b in pairs:
                da, db = getattr(self, a).shape[1], getattr(self, b).shape[1]
                if da != db:
                    problems.append(f"{a} has {da} columns but {b} has {db}")
            if self.item_vectors.shape[1] != self.item_cf.shape[1] + self.item_embeddings.shape[1]:
                problems.append("item_vectors are not [item_cf | item_embeddings] wide")
            if self.neighbour_sim.shape != (cat.n_items, cat.n_items):
                problems.append(f"neighbour_sim is {self.neighbour_sim.shape}, not items x items")
            if self.cov_cf.shape != (self.item_cf.shape[1],) * 2:
                problems.append(f"cov_cf is {self.cov_cf.shape}")
            if self.cov_text.shape != (self.item_embeddings.shape[1],) * 2:
                problems.append(f"cov_text is {self.cov_text.shape}")
            assert self.item_map is not None
            if self.item_map.input_dim != self.item_embeddings.shape[1]:
                problems.append(
                    f"the item text map reads {self.item_map.input_dim} dimensions, the "
                    f"embeddings have {self.item_embeddings.shape[1]}"
                )
        if problems:
            raise ModelFormatError("inconsistent arrays: " + "; ".join(problems))


def _weight(n: np.ndarray, lam: float) -> np.ndarray:
    """w(n) = n / (n + lambda); lambda = 0 trusts any interaction fully."""
    if lam <= 0:
        return (n > 0).astype(np.float32)
    return (n / (n + lam)).astype(np.float32)


def popularity_fade(n: np.ndarray, fade: float, lam: float) -> np.ndarray:
    """How much of the popularity prior a user with n events keeps: fade^n (1 - w(n)).

    The per-event factor is what lets a newcomer's few clicks outweigh the prior; 1 - w(n)
    alone (lambda_users is about 10) left two thirds of it after five clicks.
    """
    return np.asarray(np.power(fade, n) * (1.0 - _weight(n, lam)), dtype=np.float32)


def _extend_once(grid: Sequence[float], best: float, *, upper: bool) -> tuple[float, ...]:
    """Values beyond a grid's edge when `best` sits on it: ×2 and ×4 past the top edge, ÷2 and
    ÷4 past a positive bottom edge (`upper=False`); nothing otherwise (0 is a real choice)."""
    if len(grid) < 2:
        return ()
    if upper and best == max(grid) and best > 0:
        return (2.0 * best, 4.0 * best)
    if not upper and best == min(grid) and best > 0:
        return (best / 2.0, best / 4.0)
    return ()


class _Choice:
    """What the fit's reported choices share: a JSON round trip (saved with the model) and the
    note on grid edges."""

    at_grid_edge: tuple[str, ...]

    def _edges(self) -> str:
        edges = ", ".join(self.at_grid_edge)
        return f"; at the edge of its grid: {edges}" if edges else ""

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "at_grid_edge": list(self.at_grid_edge)})

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        return cls(**cls._decode({**data, "at_grid_edge": tuple(data["at_grid_edge"])}))

    @classmethod
    def _decode(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data


@dataclass(frozen=True)
class ColdUserChoice(_Choice):
    """What the cold-user blend was chosen on, and how it did there.

    `ndcg` is the mean NDCG@k over held-out users served with nothing and with each number of
    revealed items (keys: revealed count); `responsiveness` is the share of their top 10, after
    `responsiveness_events` events, that their events brought in: items absent from the top 10
    they got before any event (the revealed items excluded from both).
    """

    neighbour_weight: float
    popularity_weight: float
    popularity_fade: float
    ndcg: dict[int, float]
    responsiveness: float | None
    min_responsiveness: float
    users: int
    at_grid_edge: tuple[str, ...] = ()

    def summary(self) -> str:
        ndcg = ", ".join(f"{v:.4f} (n={n})" for n, v in self.ndcg.items())
        resp = "n/a" if self.responsiveness is None else f"{self.responsiveness:.2f}"
        text = (
            f"neighbour_weight={self.neighbour_weight:g} popularity_weight="
            f"{self.popularity_weight:g} popularity_fade={self.popularity_fade:g}; on "
            f"{self.users} held-out users NDCG {ndcg}; responsiveness {resp} (at least "
            f"{self.min_responsiveness:g})"
        )
        return text + self._edges()

    @classmethod
    def _decode(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "ndcg": {int(n): float(v) for n, v in data["ndcg"].items()}}


@dataclass(frozen=True)
class CFChoice(_Choice):
    """The collaborative filtering settings chosen on the held-out slice, and how they did."""

    algorithm: str
    factors: int
    regularization: float
    alpha: float
    ndcg: float  # NDCG@k of the factors alone on the held-out slice
    ndcg_default: float  # the same with the default settings
    fits: int
    seconds: float
    stopped_by_budget: bool = False
    at_grid_edge: tuple[str, ...] = ()

    def summary(self) -> str:
        text = (
            f"{self.algorithm} factors={self.factors} regularization={self.regularization:g} "
            f"alpha={self.alpha:g}; NDCG of the factors alone on the held-out slice "
            f"{self.ndcg:.4f} (defaults {self.ndcg_default:.4f}); {self.fits} fits in "
            f"{self.seconds:g} s"
        )
        if self.stopped_by_budget:
            text += " (stopped by the time budget: cf_search_seconds)"
        return text + self._edges()


@dataclass(frozen=True)
class WarmUserChoice(_Choice):
    """The warm users' blend weights and the held-out NDCG@k with them and without them."""

    neighbour_weight: float
    popularity_weight: float
    new_item_boost: float
    ndcg: float  # held-out interactions with warm items, with the terms (no boost)
    ndcg_without: float  # the same without the terms
    ndcg_boosted: float  # the same with the terms and the boost
    ndcg_new: float  # interactions with the items held out entirely, ranked among all items
    ndcg_new_without: float  # the same without the boost
    users: int
    at_grid_edge: tuple[str, ...] = ()

    def summary(self) -> str:
        text = (
            f"warm_neighbour_weight={self.neighbour_weight:g} warm_popularity_weight="
            f"{self.popularity_weight:g} new_item_boost={self.new_item_boost:g}; on "
            f"{self.users} users' held-out interactions NDCG {self.ndcg:.4f} (without the "
            f"terms {self.ndcg_without:.4f}, with the boost {self.ndcg_boosted:.4f}); held-out "
            f"new items among all {self.ndcg_new:.4f} (without the boost "
            f"{self.ndcg_new_without:.4f})"
        )
        return text + self._edges()


class _ColdBlendSearch:
    """Scores the cold-user blend's weights on the validation cases, fast enough for big grids.

    Each case's three terms are standardised once. Only candidate columns are ranked: per user,
    the union of the top `depth` items of each term (the blend's top k lies there unless an
    item is mediocre on all three at once), so a grid point costs a few hundred columns per
    user instead of the catalogue.
    """

    def __init__(
        self,
        sub: WarmStartRecommender,
        cases: Mapping[int, tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]],
        k: int,
        responsiveness_events: int,
    ) -> None:
        self.k = k
        self.lam = sub.lambda_users_
        z_pop = standardise(sub._pop()[None, :].astype(np.float32))[0]
        depth = max(4 * k, 100)
        pop_top = np.argsort(-z_pop, kind="stable")[:depth]
        self.cases: dict[int, tuple[Any, ...]] = {}
        revealed = [n for n in cases if n > 0]
        steer = (
            responsiveness_events if responsiveness_events in cases else max(revealed, default=0)
        )
        self.steer = steer
        for n, (base, rows, truth) in cases.items():
            zb = standardise(base)
            zn = _standardise_sparse(sub._neighbour_rows(rows), None) if n else None
            n_users, n_items = zb.shape
            if depth >= n_items:
                cols = np.tile(np.arange(n_items), (n_users, 1))
            else:
                blocks = [np.argpartition(-zb, depth - 1, axis=1)[:, :depth]]
                if zn is not None:
                    blocks.append(np.argpartition(-zn, depth - 1, axis=1)[:, :depth])
                cols = np.hstack([*blocks, np.tile(pop_top, (n_users, 1))])
            cols = np.sort(cols, axis=1)
            dup = np.zeros(cols.shape, dtype=bool)
            dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
            # Revealed items are never recommended back; the steered case's are also kept out
            # of the nothing-revealed list it is compared with.
            out = np.take_along_axis(rows.toarray() > 0, cols, axis=1)
            mask = np.where(dup | out, -np.inf, 0.0).astype(np.float32)
            steered_out = np.zeros(cols.shape, dtype=bool)
            if n == 0 and steer:
                steered_out = np.take_along_axis(cases[steer][1].toarray() > 0, cols, axis=1)
            rows_n = np.diff(rows.indptr).astype(np.float32)
            fade_n = popularity_fade(rows_n, 1.0, self.lam)  # times rho**n per grid point
            self.cases[n] = (
                cols,
                np.take_along_axis(zb, cols, axis=1),
                None if zn is None else np.take_along_axis(zn, cols, axis=1),
                z_pop[cols] * fade_n[:, None],
                mask,
                np.where(steered_out, -np.inf, 0.0).astype(np.float32),
                truth,
            )
        self._metric = NDCG(k)
        self._memo: dict[tuple[float, float, float], tuple[dict[int, float], float | None]] = {}

    def _top(self, n: int, a: float, b: float, rho: float, k: int, extra: bool) -> np.ndarray:
        cols, zb, zn, zp, mask, steered_out, _ = self.cases[n]
        scores = zb + mask
        if zn is not None and a:
            scores = scores + a * zn
        if b:
            scores = scores + (b * rho**n) * zp
        if extra:
            scores = scores + steered_out
        order, _ = topk(scores, k, copy=False)
        return np.take_along_axis(cols, np.maximum(order, 0), axis=1)

    def measure(self, weights: tuple[float, float, float]) -> tuple[dict[int, float], float | None]:
        """NDCG@k per revealed count, and the responsiveness (None without revealed cases)."""
        if weights in self._memo:
            return self._memo[weights]
        a, b, rho = weights
        ndcg = {
            n: self._metric.calc(self._top(n, a, b, rho, self.k, False), case[-1])
            for n, case in self.cases.items()
        }
        responsiveness = None
        if self.steer:
            after = self._top(self.steer, a, b, rho, 10, False)
            before = self._top(0, a, b, rho, 10, True)
            changed = [np.setdiff1d(x, y).size / x.size for x, y in zip(after, before, strict=True)]
            responsiveness = float(np.mean(changed))
        self._memo[weights] = (ndcg, responsiveness)
        return ndcg, responsiveness

    def best(
        self, axes: Sequence[Sequence[float]], min_responsiveness: float
    ) -> tuple[float, float, float]:
        """The grid point with the best mean NDCG among those responsive enough (else the most
        responsive one)."""
        grid = [(float(a), float(b), float(r)) for a in axes[0] for b in axes[1] for r in axes[2]]
        measured = {w: self.measure(w) for w in grid}
        ok = [w for w in grid if (measured[w][1] or 0.0) >= min_responsiveness or not self.steer]
        if not ok:
            log.warning(
                "no cold-user blend reaches responsiveness %s; taking the most responsive",
                min_responsiveness,
            )
            return max(grid, key=lambda w: measured[w][1] or 0.0)
        return max(ok, key=lambda w: float(np.mean(list(measured[w][0].values()))))


def _time_ranks(dataset: Dataset) -> sp.csr_matrix | None:
    """users x items: 1 + the interaction's rank in time (ties by position); None without times."""
    if dataset.timestamps is None:
        return None
    rank = np.empty(dataset.n_interactions, dtype=np.float64)
    rank[np.argsort(dataset.timestamps, kind="stable")] = np.arange(1, dataset.n_interactions + 1)
    return sp.csr_matrix(
        (rank, (dataset.users, dataset.items)), shape=(dataset.n_users, dataset.n_items)
    )


def _covariance(vectors: np.ndarray) -> np.ndarray:
    """Covariance of item vectors: the spread of u . v over items is sqrt(u' C u)."""
    v = np.asarray(vectors, dtype=np.float64)
    centred = v - v.mean(axis=0, keepdims=True)
    return np.asarray(centred.T @ centred / max(len(v), 1), dtype=np.float32)


def _per_user_scaled(users: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Rows divided by the standard deviation of their scores over the catalogue (0 stays 0)."""
    u = np.asarray(users, dtype=np.float32)
    sd = np.sqrt(np.maximum(np.sum((u @ cov) * u, axis=1), 0.0))
    return np.asarray(u / np.where(sd > 1e-12, sd, 1.0)[:, None], dtype=np.float32)


@dataclass(frozen=True)
class ProfileParts:
    """Visitors resolved for scoring: named-item rows, scoring vectors [P'/sd, beta*T/sd], and
    the embeddings of the free texts of rows `free`; `described` rows get no popularity prior."""

    rows: sp.csr_matrix
    users: np.ndarray
    free: np.ndarray
    text: np.ndarray
    described: np.ndarray
    near: sp.csr_matrix | None = None  # named items' neighbour rows, if that term is on
    # Rows with nothing to go on (no items, no text the model reads): ranked by popularity, as
    # the service's popular route ranks them.
    unknown: np.ndarray | None = None


@dataclass(frozen=True)
class _Columns:
    """Scores computed for `cols` only; `mean` and `sd` are each row's dense-term mean and
    spread over every item (from `ItemMoments`), so standardising them is exact."""

    cols: np.ndarray
    mean: np.ndarray
    sd: np.ndarray

    def standardise(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray((scores - self.mean[:, None]) / self.sd[:, None], dtype=np.float32)


def _standardise_sparse(rows: sp.csr_matrix, cols: np.ndarray | None) -> np.ndarray:
    """`standardise` of sparse rows over all their columns (zeros included), exactly, without
    densifying them; then only `cols` (all columns when None)."""
    n = rows.shape[1]
    sums = np.asarray(rows.sum(axis=1), dtype=np.float64).ravel()
    squares = np.asarray(rows.multiply(rows).sum(axis=1), dtype=np.float64).ravel()
    mean = sums / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0)) + 1e-9
    dense = rows.toarray().astype(np.float64) if cols is None else _dense_columns(rows, cols)
    return np.asarray((dense - mean[:, None]) / std[:, None], dtype=np.float32)


def _dense_columns(rows: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    """`rows[:, cols]` as a dense float64 array. For a few rows and a few hundred distinct
    columns this is much cheaper than scipy's column indexing, which rebuilds the matrix."""
    order = np.argsort(cols, kind="stable")
    ordered = cols[order]
    if ordered.size > 1 and np.any(ordered[1:] == ordered[:-1]):
        return np.asarray(rows[:, cols].toarray(), dtype=np.float64)  # repeated columns
    rows = rows.tocsr()
    if not rows.has_canonical_format:  # sorted, without duplicates; on a copy, not the caller's
        rows = rows.copy()
        rows.sum_duplicates()
    out = np.zeros((rows.shape[0], cols.size), dtype=np.float64)
    if ordered.size == 0 or rows.nnz == 0:
        return out
    at = np.minimum(np.searchsorted(ordered, rows.indices), ordered.size - 1)
    hit = ordered[at] == rows.indices
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    out[row_of[hit], order[at[hit]]] = rows.data[hit]
    return out
