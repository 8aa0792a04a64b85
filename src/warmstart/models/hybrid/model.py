"""The hybrid model: fitting (ALS, the text maps, the blends) and scoring every kind of user."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from warmstart.data.dataset import Dataset
from warmstart.data.templates import short_label
from warmstart.errors import ModelFormatError
from warmstart.index.exact import topk
from warmstart.metrics import NDCG, CappedRecall
from warmstart.models.arrays import (
    cosine,
    csr_from_state,
    csr_state,
    standardise,
    summed_rows,
)
from warmstart.models.base import ProfileQuery, Recommender
from warmstart.models.catalogue import Catalogue
from warmstart.models.cf import CFConfig, confidence_matrix, fit_factors, fold_in, profile_rows
from warmstart.models.hybrid.blending import (
    ColdBlend,
    Columns,
    ProfileParts,
    covariance,
    interaction_weight,
    neighbour_matrix,
    per_user_scaled,
    popularity_fade,
    standardise_sparse,
    time_ranks,
)
from warmstart.models.hybrid.choices import CFChoice, ColdUserChoice, WarmUserChoice
from warmstart.models.hybrid.config import WarmStartConfig
from warmstart.models.hybrid.growth import RowBuffers, with_empty_items
from warmstart.models.hybrid.selection import (
    Case,
    ColdBlendSearch,
    choose_cf,
    choose_cold_user_weights,
    choose_lambda_users,
    choose_lambdas,
    choose_warm_weights,
)
from warmstart.models.mapping import FactorMap, fit_factor_map
from warmstart.models.moments import ItemMoments
from warmstart.models.textaware import TextAware
from warmstart.scale import Executor

log = logging.getLogger(__name__)


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
    saved_arrays = (
        "item_embeddings",
        "user_text_embeddings",
        "user_vectors",
        "item_vectors",
        "user_cf",
        "item_cf",
        "cov_cf",
        "cov_text",
    )

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
        self._row_buffers = RowBuffers()  # item arrays grow without copying (add_items)
        self.cov_cf = np.empty((0, 0), dtype=np.float32)
        self.cov_text = np.empty((0, 0), dtype=np.float32)
        self.text_profile_weight_ = 0.0
        self.neighbour_sim = sp.csr_matrix((0, 0), dtype=np.float32)
        self.cold_blend_ = ColdBlend()  # newcomers' blend as fitted; a request may pass its own
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
        self._runner: Executor | None = None

    def set_executor(self, runner: Executor | None) -> None:
        """Where the fit's independent model-selection fits run (a `RayExecutor`: side by
        side on Ray); None, one after another here. Not saved with the model."""
        self._runner = runner

    # ---- fitting -------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        cfg = self.config
        self.item_embeddings = self.encode(catalogue.item_text)
        self.user_text_embeddings = self.encode(catalogue.user_text)
        self.uses_user_text_ = bool(np.any(self.user_text_embeddings))
        time_rank = time_ranks(dataset) if cfg.history_order == "earliest" else None
        chosen = self._select(catalogue.seen, time_rank)
        self.cf_, self.cf_choice_ = chosen.cf, chosen.cf_choice
        self.warm_user_choice_ = chosen.warm_choice
        self.warm_neighbour_weight_, self.warm_popularity_weight_, self.new_item_boost_ = (
            chosen.warm
        )
        self.lambda_items_, self.lambda_users_ = chosen.lambda_items, chosen.lambda_users
        self.text_profile_weight_ = chosen.text_profile_weight
        p, q, self.item_map, self.user_map = self._fit_core(
            catalogue.seen, self.cf_, time_rank, chosen.penalties
        )
        self.item_cf = self._blend_items(q, catalogue.seen, self.lambda_items_, self.item_map)
        w = interaction_weight(catalogue.item_counts().astype(np.float32), self.lambda_items_)
        self.cov_cf = covariance(self.item_cf)
        self.cov_text = covariance(self.item_embeddings)
        self.item_vectors = np.hstack([self.item_cf, (1.0 - w)[:, None] * self.item_embeddings])
        self.neighbour_sim = neighbour_matrix(
            catalogue.seen, cfg.neighbours, cfg.neighbour_popularity_penalty
        )
        given = (cfg.neighbour_weight, cfg.popularity_weight, cfg.popularity_fade)
        self.cold_user_choice_ = None
        if None in given:
            self.cold_user_choice_, self.lambda_users_ = self._select_cold_blend(dataset, given)
        if self.cold_user_choice_ is not None:
            c = self.cold_user_choice_
            given = (c.neighbour_weight, c.popularity_weight, c.popularity_fade)
        a, b, fade = given
        if a is None or b is None or fade is None:  # too few users to choose on: no blending
            a, b, fade = (a if a is not None else 0.0, b if b is not None else 0.0, fade or 1.0)
        self.cold_blend_ = ColdBlend(float(a), float(b), float(fade))
        self.user_cf = self._blend_users(p, catalogue.seen, self.lambda_users_, self.user_map)
        self.user_vectors = self._scoring_users(
            self.user_cf, self._served_text_profiles(catalogue.seen)
        )

    def _fit_core(
        self,
        seen: sp.csr_matrix,
        cf: CFConfig,
        time_rank: sp.csr_matrix | None,
        penalties: tuple[float | None, float | None] = (None, None),
    ) -> tuple[np.ndarray, np.ndarray, FactorMap, FactorMap]:
        """ALS factors and the two text maps; `penalties` reuses ridge alphas chosen earlier."""
        cfg = self.config
        p, q = fit_factors(seen, cf)
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
        x, y = self._user_training_rows(seen, p, time_rank)
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
        self, seen: sp.csr_matrix, p: np.ndarray, time_rank: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warm users seen with full, truncated and empty histories, all mapped to their CF factors.

        A truncated history is the user's earliest n items when the data has timestamps (what a
        newcomer has actually done after n interactions), n random ones otherwise.
        """
        rng = np.random.default_rng(self.config.seed)
        seen = seen.tocsr()
        order = None
        if time_rank is not None:
            pattern = seen.copy()
            pattern.data[:] = 1.0
            order = sp.csr_matrix(time_rank.multiply(pattern))
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

    def _blend_items(
        self, q: np.ndarray, seen: sp.csr_matrix, lam: float, item_map: FactorMap
    ) -> np.ndarray:
        """Q' = w(n) Q + (1 - w(n)) g(text) per item, for one lambda_items."""
        n = np.bincount(seen.indices, minlength=seen.shape[1]).astype(np.float32)
        w = interaction_weight(n, lam)[:, None]
        return (w * q + (1.0 - w) * item_map.predict(self.item_embeddings)).astype(np.float32)

    def _blend_users(
        self, p: np.ndarray, seen: sp.csr_matrix, lam: float, user_map: FactorMap
    ) -> np.ndarray:
        """P' = w(n) P + (1 - w(n)) h(user features) per user, for one lambda_users."""
        n = np.diff(seen.indptr).astype(np.float32)
        w = interaction_weight(n, lam)[:, None]
        mapped = user_map.predict(self._user_features(self.user_text_embeddings, seen))
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
            [per_user_scaled(user_cf, cov_cf), beta * per_user_scaled(profiles, cov_text)]
        ).astype(np.float32)

    def _select(self, seen: sp.csr_matrix, time_rank: sp.csr_matrix | None) -> Selection:
        """The settings not given, chosen on held-out training data (see `selection`).

        A slice of interactions is held out to choose the ALS settings and the lambdas
        (recall@k of warm users) and the warm users' weights (NDCG@k), and
        `cold_validation_fraction` of the items are held out entirely to choose beta the way it
        is used: ranking cold items, by NDCG@k (the top of a newcomer's list matters most).
        """
        cfg = self.config
        given = (cfg.lambda_items, cfg.lambda_users, cfg.text_profile_weight)
        warm = (cfg.warm_neighbour_weight, cfg.warm_popularity_weight, cfg.new_item_boost)
        if None not in given and None not in warm:
            lam_i, lam_u, beta = (float(x or 0.0) for x in given)
            return Selection(lam_i, lam_u, beta, _floats(warm), cfg.cf)
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

        def interactions(mask: np.ndarray) -> sp.csr_matrix:
            ones = np.ones(mask.sum(), np.float32)
            return sp.csr_matrix((ones, (coo.row[mask], coo.col[mask])), shape=shape)

        held_out, cold_out = interactions(held), interactions(is_cold)
        cf, cf_choice = cfg.cf, None
        if cfg.tune_cf and held.any():
            cf, cf_choice = choose_cf(train, held_out, cfg, self._runner)
        p, q, item_map, user_map = self._fit_core(train, cf, time_rank)
        profiles = self._text_profiles(train)
        scorer = _HeldOutScorer(self, p, q, item_map, user_map, train, profiles)
        everything = np.arange(shape[1])
        lam_i, lam_u, beta = choose_lambdas(
            (lambda li, lu, b: scorer.score(held_out, li, lu, b, everything))
            if held.any()
            else None,
            (lambda li, lu, b: scorer.score(cold_out, li, lu, b, cold, ndcg=True))
            if is_cold.any()
            else None,
            cfg,
            given,
        )
        warm_choice = None
        if None in warm and held.any():
            warm_choice = choose_warm_weights(
                train, held_out, cold_out, scorer.scores(lam_i, lam_u, beta), lam_i, warm, cfg
            )
            c = warm_choice
            warm = (c.neighbour_weight, c.popularity_weight, c.new_item_boost)
        penalties = (item_map.alpha, user_map.alpha)
        return Selection(lam_i, lam_u, beta, _floats(warm), cf, cf_choice, warm_choice, penalties)

    def _select_cold_blend(
        self, dataset: Dataset, given: tuple[float | None, float | None, float | None]
    ) -> tuple[ColdUserChoice | None, float]:
        """The cold-user blend (None with too few users to choose on) and lambda_users, which
        held-out newcomers may choose better than the warm slice (`cold_user_cases`)."""
        validation = self.cold_user_cases(dataset)
        if validation is None:
            return None, self.lambda_users_
        sub, cases = validation
        search = ColdBlendSearch(
            cases,
            popularity=sub._pop(),
            neighbour_rows=sub.neighbour_rows,
            lambda_users=sub.lambda_users_,
            k=self.config.validation_k,
            responsiveness_events=self.config.responsiveness_events,
        )
        users = cases[0][2].shape[0]
        return choose_cold_user_weights(search, given, self.config, users), sub.lambda_users_

    def cold_user_cases(
        self, dataset: Dataset
    ) -> tuple[WarmStartRecommender, dict[int, Case]] | None:
        """The validation the cold-user blend is chosen on, or None with under 20 users.

        A refit without the held-out users, and per number n of revealed items (0, each of
        `cold_user_revealed` and `responsiveness_events`): their unblended scores, the revealed
        items as rows, and the rest of their items as the truth. Counts that leave fewer than 20
        users with two items to spare are dropped, largest first. Unless lambda_users is given,
        the refit's lambda_users is chosen again on these newcomers (`choose_lambda_users`).
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
        cases: dict[int, Case] = {}
        asked: dict[int, list[ProfileQuery]] = {}
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
            chosen = sub.lambda_users_
            metric, k = NDCG(cfg.validation_k), cfg.validation_k

            def ndcg(lam: float) -> float:
                sub.lambda_users_ = lam
                values = []
                for n, (_, rows, truth) in cases.items():
                    if n:
                        ids, _ = topk(sub.score_profiles(asked[n]), k, rows)
                        values.append(metric.calc(ids, truth))
                return float(np.mean(values))

            lam = choose_lambda_users(ndcg, chosen, cfg.lambda_grid)
            sub.lambda_users_ = lam
            if lam != chosen:
                cases = {n: (sub.score_profiles(asked[n]), *cases[n][1:]) for n in cases}
        return sub, cases

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
            blend = self.cold_blend_
            lines.append(
                f"cold users: neighbour_weight={blend.neighbour_weight:g} popularity_weight="
                f"{blend.popularity_weight:g} popularity_fade={blend.popularity_fade:g} (given, "
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

    def check_servable(self, encoder_dim: int) -> None:
        """Fail now, not on a user's request, where the model is broken in a way its arrays do
        not show: an encoder of another dimension than its embeddings, a text map that does not
        fit its factors. Scores one probe visitor."""
        dims = self.item_embeddings.shape[1]
        if encoder_dim != dims:
            raise ModelFormatError(
                f"its encoder {self.config.encoder!r} makes {encoder_dim}-dimensional vectors, "
                f"but its item embeddings have {dims} dimensions"
            )
        if self.catalogue.n_items and self.item_map is not None:
            self.item_map.predict(self.item_embeddings[:1])
            probe = ProfileQuery(text="warm-up", attribute_text=None, items=np.array([0]))
            self.score_profiles([probe])

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
            scores[cold] = self.cold_blend(scores[cold], empty, self.cold_blend_)
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

    def score_warm_user(
        self, user: int, candidates: np.ndarray, near: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """A warm user's scores for `candidates` only (internal ids), equal to the full ones:
        the added terms are standardised over every item, as `_score_users` does. `near` is
        `history_neighbours(user)` where the caller has it already."""
        scores = self.user_vectors[[user]] @ self.item_vectors[candidates].T
        return self._warm_blend(scores, np.array([user]), candidates, near)

    def history_neighbours(self, user: int) -> sp.csr_matrix:
        """A trained user's history's summed neighbour similarities, one row over every item:
        the warm blend's neighbour term before standardising (its non-zeros are the items near
        what they picked)."""
        return self.neighbour_rows(self.catalogue.seen[[user]])

    def _warm_blend(
        self,
        scores: np.ndarray,
        users: np.ndarray,
        columns: np.ndarray | None = None,
        near: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """s + w_i (a_w z(history's neighbours) + b_w z(popularity)) + boost (1 - w_i) max(z(s), 0).

        The scores are already on a per-user unit scale (the scoring vectors are divided by their
        spread), so the terms add as the cold blend's do. w_i = n_i / (n_i + lambda_items) is the
        item's collaborative weight: an item with no interactions has no neighbours and no
        popularity yet, which says nothing against it, so it gets the average item's terms (0)
        and competes on its text-placed score, raised in proportion to how well it fits (the
        boost), so new items that fit reach lists where warm items have those terms. `near` is
        `neighbour_rows` of the users' histories where the caller has it already.
        """
        a, b = self.warm_neighbour_weight_, self.warm_popularity_weight_
        out = np.array(scores, dtype=np.float32)
        counts = self.catalogue.item_counts()
        counts = (counts if columns is None else counts[columns]).astype(np.float32)
        w = interaction_weight(counts, self.lambda_items_)
        if a:
            if near is None:
                near = self.neighbour_rows(self.catalogue.seen[users])
            out += a * w * standardise_sparse(near, columns)
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

    def cold_blend(
        self,
        scores: np.ndarray,
        rows: sp.csr_matrix,
        blend: ColdBlend,
        popularity: np.ndarray | None = None,
        described: np.ndarray | None = None,
        columns: Columns | None = None,
        near: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """z(score) + a z(named items' neighbours) + b fade^n (1 - w(n)) z(popularity), per user.

        Users who `described` their taste in free text get no popularity prior: what they asked
        for outweighs what most people like. With `columns`, `scores` holds only those items
        (see `Columns`); the neighbour and popularity terms are still standardised exactly.
        `near` is `neighbour_rows(rows)` where the caller has it already.
        """
        a, b, rho = blend.neighbour_weight, blend.popularity_weight, blend.popularity_fade
        if a == 0 and b == 0:
            return scores
        n = np.diff(rows.indptr).astype(np.float32)
        out = standardise(scores) if columns is None else columns.standardise(scores)
        named = np.flatnonzero(n > 0)
        if a and named.size:
            near = self.neighbour_rows(rows) if near is None else near
            if named.size < near.shape[0]:
                near = near[named]
            out[named] += a * standardise_sparse(near, None if columns is None else columns.cols)
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

    def neighbour_rows(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """Per row, the summed neighbour similarities of its named items (float32 CSR)."""
        return summed_rows(rows, self.neighbour_sim)

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

    def profile_parts(
        self, queries: Sequence[ProfileQuery], blend: ColdBlend | None = None
    ) -> ProfileParts:
        """What scoring visitors needs besides the items: their scoring vectors (ANN queries for
        the first term), free-text embeddings, and named-item rows; scored with `blend` (the
        fitted `cold_blend_` when None)."""
        blend = self.cold_blend_ if blend is None else blend
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
        w = interaction_weight(n, self.lambda_users_)[:, None]
        users = self._scoring_users(w * p_cf + (1.0 - w) * p_text, self._served_text_profiles(rows))
        described = np.array([bool(q.text) for q in queries], dtype=bool)
        near = self.neighbour_rows(rows) if blend.neighbour_weight and rows.nnz else None
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
            blend=blend,
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
            out = self.cold_blend(
                scores, parts.rows, parts.blend, described=parts.described, near=parts.near
            )
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
        columns = Columns(candidates, mean, sd)
        out = self.cold_blend(
            scores,
            parts.rows,
            parts.blend,
            described=parts.described,
            columns=columns,
            near=parts.near,
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

    def _moments_to_update(self) -> ItemMoments | None:
        """A copy of the kept moments, for growth to update: a copy of this model taken before
        the growth (a service's published snapshot) keeps reading the moments of its arrays."""
        moments = self._moments_if_current()
        return None if moments is None else moments.copy()

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
        w = float(interaction_weight(np.array([n], dtype=np.float32), self.lambda_items_)[0])
        if w < 0.5:
            return [f"few interactions ({n}): mostly placed by its text ({1 - w:.0%})"]
        return []

    # ---- catalogue growth ----------------------------------------------------------------
    def _add_item_rows(self, texts: list[str]) -> None:
        """New items get their text embedding mapped into the factor space: recommendable at once."""
        assert self.item_map is not None
        emb = self.encode(texts)
        moments = self._moments_to_update()
        grow = self._row_buffers.append
        self.item_embeddings = grow("item_embeddings", self.item_embeddings, emb)
        mapped = self.item_map.predict(emb).astype(np.float32)
        self.item_cf = grow("item_cf", self.item_cf, mapped)
        vectors = np.hstack([mapped, emb]).astype(np.float32, copy=False)
        self.item_vectors = grow("item_vectors", self.item_vectors, vectors)
        if moments is not None:
            moments.add(np.hstack([vectors, emb]))
        self._keep_moments(moments)
        # New items have no neighbours yet.
        self.neighbour_sim = with_empty_items(
            self.neighbour_sim, self.catalogue.n_items + len(texts)
        )

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
        moments = self._moments_to_update()
        changed = np.unique(items)
        before = np.hstack([self.item_vectors[changed], self.item_embeddings[changed]])
        old_mapped = self.item_map.predict(self.item_embeddings[items])
        new_mapped = self.item_map.predict(new)
        counts = self.catalogue.item_counts()[items].astype(np.float32)
        fade = (1.0 - interaction_weight(counts, self.lambda_items_))[:, None]
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
            **super()._state(),
            "lambdas": np.asarray(
                [
                    self.lambda_items_,
                    self.lambda_users_,
                    self.text_profile_weight_,
                    self.cold_blend_.neighbour_weight,
                    self.cold_blend_.popularity_weight,
                    self.cold_blend_.popularity_fade,
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
        super()._set_state(arrays)
        lam_i, lam_u, beta, a, b, fade, warm_a, warm_b, boost = (
            float(x) for x in arrays["lambdas"]
        )
        self.warm_neighbour_weight_, self.warm_popularity_weight_ = warm_a, warm_b
        self.new_item_boost_ = boost
        self.lambda_items_, self.lambda_users_, self.text_profile_weight_ = lam_i, lam_u, beta
        self.cold_blend_ = ColdBlend(a, b, fade)
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


@dataclass(frozen=True)
class Selection:
    """What `_select` chose on held-out data (or took as given) for the final fit."""

    lambda_items: float
    lambda_users: float
    text_profile_weight: float
    warm: tuple[float, float, float]  # warm_neighbour_weight, warm_popularity_weight, boost
    cf: CFConfig
    cf_choice: CFChoice | None = None
    warm_choice: WarmUserChoice | None = None
    penalties: tuple[float | None, float | None] = (None, None)  # ridge alphas of the two maps


def _floats(values: tuple[float | None, float | None, float | None]) -> tuple[float, float, float]:
    a, b, c = (float(x or 0.0) for x in values)
    return a, b, c


class _HeldOutScorer:
    """Scores of held-out users as a model fitted on `train` with given lambdas and beta would
    give them (before any blend), for the searches. The item side is kept for the last
    lambda_items and the user side for the last lambda_users: the coordinate searches vary one
    at a time."""

    def __init__(
        self,
        model: WarmStartRecommender,
        p: np.ndarray,
        q: np.ndarray,
        item_map: FactorMap,
        user_map: FactorMap,
        train: sp.csr_matrix,
        profiles: np.ndarray,
    ) -> None:
        self.model, self.train, self.profiles = model, train, profiles
        counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
        emb = model.item_embeddings

        @functools.lru_cache(maxsize=1)
        def item_side(li: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
            """Scoring vectors of the items, and the covariances that scale users, for one λ."""
            qv = model._blend_items(q, train, li, item_map)
            w = interaction_weight(counts, li)
            cov = (covariance(qv), covariance(emb))
            return np.hstack([qv, (1.0 - w)[:, None] * emb]), cov

        @functools.lru_cache(maxsize=1)
        def user_side(lu: float) -> np.ndarray:
            return model._blend_users(p, train, lu, user_map)

        self.item_side, self.user_side = item_side, user_side

    def score(
        self,
        valid: sp.csr_matrix,
        li: float,
        lu: float,
        b: float,
        items: np.ndarray,
        ndcg: bool = False,
    ) -> float:
        """recall@k (or NDCG@k) of the users with held-out interactions among `items`
        (2,000 of them at most, as in the CF search: enough to rank a few settings)."""
        cfg = self.model.config
        users = np.flatnonzero(np.diff(valid.indptr) > 0)
        if users.size == 0:
            return 0.0
        if users.size > 2000:
            users = np.sort(np.random.default_rng([cfg.seed, 4]).choice(users, 2000, False))
        iv, cov = self.item_side(li)
        uv = self.model._scoring_users(self.user_side(lu)[users], self.profiles[users], b, cov)
        iv = iv[items]
        truth = valid[users][:, items].tocsr()
        ids, _ = topk(uv @ iv.T, cfg.validation_k, self.train[users][:, items])
        if ndcg:
            return NDCG(cfg.validation_k).calc(ids, truth)
        return CappedRecall(cfg.validation_k).calc(ids, truth)

    def scores(self, li: float, lu: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
        """Scores of the given users over every item, for these lambdas and beta."""
        iv, cov = self.item_side(li)
        pv = self.user_side(lu)

        def scores(users: np.ndarray) -> np.ndarray:
            uv = self.model._scoring_users(pv[users], self.profiles[users], beta, cov)
            return np.asarray(uv @ iv.T)

        return scores
