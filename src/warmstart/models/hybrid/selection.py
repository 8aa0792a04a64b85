"""Model selection for the hybrid: the searches that choose its settings on held-out data.

Each search takes what it decides on (held-out interactions, unblended scores, validation cases)
and returns what it chose with how it did there (a `Choice`), so a benchmark can run one search
alone; `WarmStartRecommender` builds their inputs from its fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from warmstart.index.exact import topk
from warmstart.metrics import NDCG
from warmstart.models.arrays import binary, standardise
from warmstart.models.cf import CFConfig, fit_factors
from warmstart.models.hybrid.blending import (
    interaction_weight,
    neighbour_matrix,
    popularity_fade,
    standardise_sparse,
)
from warmstart.models.hybrid.choices import CFChoice, ColdUserChoice, WarmUserChoice, extend_once
from warmstart.models.hybrid.config import WarmStartConfig
from warmstart.scale import Executor, LocalExecutor

log = logging.getLogger(__name__)

# A validation case of the cold-user search, per number of revealed items: the held-out users'
# unblended scores, their revealed items as rows, and the rest of their items (the truth).
Case = tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]
Weights = tuple[float, float, float]


def choose_lambdas(
    score: Callable[[float, float, float], float] | None,
    score_cold: Callable[[float, float, float], float] | None,
    cfg: WarmStartConfig,
    given: tuple[float | None, float | None, float | None],
) -> tuple[float, float, float]:
    """Coordinate search of lambda_items, then lambda_users (by `score`, recall@k of held-out
    interactions of warm users), then beta (by `score_cold`, NDCG@k of items held out entirely:
    the case beta serves). A given value is kept; a search without its held-out data keeps the
    given value or 0."""
    lam_i, lam_u, beta = given
    b0 = beta if beta is not None else 0.0
    if score is None:
        best_i, best_u = lam_i or 0.0, lam_u or 0.0
    else:
        grid = cfg.lambda_grid
        best_i = (
            lam_i if lam_i is not None else max(grid, key=lambda li: score(li, lam_u or 0.0, b0))
        )
        best_u = lam_u if lam_u is not None else max(grid, key=lambda lu: score(best_i, lu, b0))
    if beta is None:
        if score_cold is not None:
            beta = max(cfg.text_profile_grid, key=lambda b: score_cold(best_i, best_u, b))
        else:
            beta = 0.0
    log.info(
        "chose lambda_items=%s lambda_users=%s text_profile_weight=%s on validation",
        best_i,
        best_u,
        beta,
    )
    return float(best_i), float(best_u), float(beta)


def cf_ndcg(
    cf: CFConfig,
    *,
    train: sp.csr_matrix,
    users: np.ndarray,
    seen: sp.csr_matrix,
    truth: sp.csr_matrix,
    k: int,
) -> float:
    """NDCG@k of ALS (or BPR) factors fitted with `cf` on `train`, for `users` (whose training
    rows are `seen` and held-out ones `truth`): one point of `choose_cf`'s search, on its own
    so that a Ray task can run it."""
    # fewer sweeps than the final fit: enough to rank settings, at half the cost
    p, q = fit_factors(train, cf.model_copy(update={"iterations": 8}))
    ids, _ = topk(p[users] @ q.T, k, seen)
    return NDCG(k).calc(ids, truth)


def choose_cf(
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    cfg: WarmStartConfig,
    runner: Executor | None = None,
) -> tuple[CFConfig, CFChoice]:
    """ALS regularisation, factors and confidence weight, by NDCG@k of the factors alone on
    the held-out slice: a coordinate search in that order from the default `cf` (factors
    after regularisation: with the default's light penalty, fewer factors win only because
    they overfit less, and blur a newcomer's few clicks into what everyone likes; the fewest
    factors within 1 % of the best, as each one costs fit time), each grid
    extended once past the edge its best value sits on, within `cf_search_seconds` (past
    it, the best so far). Data with no strengths (every weight 1) skips alpha, which then
    only rescales every confidence alike, and also tries BPR.

    The points of one grid are independent fits: `runner` (a `RayExecutor`) fits them side
    by side. One at a time, the budget is checked before each fit; side by side, before
    each grid.
    """
    runner = runner or LocalExecutor()
    start = time.perf_counter()
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    if users.size > 2000:
        users = np.sort(np.random.default_rng([cfg.seed, 3]).choice(users, 2000, replace=False))
    shared = {
        "train": train,
        "users": users,
        "seen": train[users],
        "truth": valid[users],
        "k": cfg.validation_k,
    }
    memo: dict[tuple[Any, ...], float] = {}
    stopped = False

    def key(cf: CFConfig) -> tuple[Any, ...]:
        return (cf.algorithm, cf.factors, cf.regularization, cf.alpha)

    def over_budget() -> bool:
        nonlocal stopped
        stopped = stopped or time.perf_counter() - start > cfg.cf_search_seconds
        return stopped

    def measure(options: Sequence[CFConfig]) -> None:
        """Fit the options not measured yet; past the budget, none (they score -1)."""
        todo = list({key(o): o for o in options if key(o) not in memo}.values())
        if not todo or over_budget():
            return
        for i, value in runner.map(cf_ndcg, todo, shared):
            memo[key(todo[i])] = value
            if not runner.parallel and over_budget():
                break

    def ndcg(cf: CFConfig) -> float:
        return memo.get(key(cf), -1.0)

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
        measure(options)
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
        more = extend_once(grid, value, upper=True) or extend_once(grid, value, upper=False)
        if more:
            best = pick([best, *tried(best, name, grid), *tried(best, name, more)], name)
            if float(getattr(best, name)) == more[-1]:
                edges.append(name)
    if not strengths and cfg.cf.algorithm == "als":
        options = [best, best.model_copy(update={"algorithm": "bpr"})]
        measure(options)
        best = max(options, key=ndcg)
    choice = CFChoice(
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
    log.info("collaborative filtering: %s", choice.summary())
    return best, choice


def choose_warm_weights(
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    new_valid: sp.csr_matrix,
    scores: Callable[[np.ndarray], np.ndarray],
    lam_i: float,
    given: tuple[float | None, float | None, float | None],
    cfg: WarmStartConfig,
) -> WarmUserChoice:
    """Warm users' neighbour and popularity weights and the new-item boost.

    The weights: the best NDCG@k of the held-out interactions of (up to 1,000) users, on
    `warm_grid`, among those that cost the users' interactions with the items held out
    entirely (new items, placed by text alone, ranked among every item) at most
    `new_item_cost` of their NDCG; zero where the terms do not help. Then the boost: the
    best NDCG@k of those new-item interactions among the boosts that cost the warm ones at
    most `new_item_cost`: as many fitting new items as a list can take without getting
    worse at what it already did. Grids are extended once past their top edge.
    """
    both = valid + new_valid
    users = np.flatnonzero(np.diff(both.indptr) > 0)
    if users.size > 1000:
        users = np.sort(np.random.default_rng([cfg.seed, 2]).choice(users, 1000, replace=False))
    base = scores(users)
    rows = train[users]
    counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
    w = interaction_weight(counts, lam_i)
    knn = neighbour_matrix(train, cfg.neighbours, cfg.neighbour_popularity_penalty)
    near = w * standardise_sparse(binary(rows) @ knn, None)
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
                more = extend_once(axes[axis], best[axis], upper=True)
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
    choice = WarmUserChoice(
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
    log.info("warm users: %s", choice.summary())
    return choice


class ColdBlendSearch:
    """Scores the cold-user blend's weights on the validation cases, fast enough for big grids.

    Each case's three terms are standardised once. Only candidate columns are ranked: per user,
    the union of the top `depth` items of each term (the blend's top k lies there unless an
    item is mediocre on all three at once), so a grid point costs a few hundred columns per
    user instead of the catalogue.
    """

    def __init__(
        self,
        cases: Mapping[int, Case],
        *,
        popularity: np.ndarray,
        neighbour_rows: Callable[[sp.csr_matrix], sp.csr_matrix],
        lambda_users: float,
        k: int,
        responsiveness_events: int,
    ) -> None:
        self.k = k
        self.lam = lambda_users
        z_pop = standardise(popularity[None, :].astype(np.float32))[0]
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
            zn = standardise_sparse(neighbour_rows(rows), None) if n else None
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


def choose_cold_user_weights(
    search: ColdBlendSearch,
    given: tuple[float | None, float | None, float | None],
    cfg: WarmStartConfig,
    users: int,
) -> ColdUserChoice:
    """Neighbour weight, popularity weight and its per-event fade for cold users.

    The best mean NDCG@k over the validation cases (held-out users served with nothing and with
    their earliest items), among the weights under which their events steer
    (`min_responsiveness`; see `ColdUserChoice`). NDCG on data like MovieLens keeps rewarding a
    heavier popularity prior, which is how a newcomer who clicked five cartoons ends up with ten
    blockbusters: the constraint is what stops it. A grid whose best value lies on its upper
    edge (or, for the fade, its lower one) is extended once, and a choice still on an edge is
    reported.
    """
    a, b, fade = given
    axes = [
        (a,) if a is not None else cfg.neighbour_grid,
        (b,) if b is not None else cfg.popularity_grid,
        (fade,) if fade is not None else cfg.popularity_fade_grid,
    ]
    free = [a is None, b is None, fade is None]
    best = search.best(axes, cfg.min_responsiveness)
    for axis, grid in enumerate(axes):
        more = extend_once(grid, best[axis], upper=axis < 2) if free[axis] else ()
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
    choice = ColdUserChoice(
        neighbour_weight=best[0],
        popularity_weight=best[1],
        popularity_fade=best[2],
        ndcg=ndcg,
        responsiveness=responsiveness,
        min_responsiveness=cfg.min_responsiveness,
        users=users,
        at_grid_edge=tuple(edges),
    )
    log.info("cold users: %s", choice.summary())
    return choice


def choose_lambda_users(
    ndcg: Callable[[float], float], chosen: float, grid: Sequence[float]
) -> float:
    """lambda_users where it matters: for users with a few events, whose vector blends the
    fold-in of their items with the text map by w(n) = n / (n + lambda). The held-out slice of
    warm users (where w is near 1 whatever lambda) cannot tell; held-out newcomers, by `ndcg`
    (of their unblended scores after their first events, for one lambda), can."""
    best = max(sorted({chosen, *grid}), key=ndcg)
    log.info("chose lambda_users=%s on held-out newcomers", best)
    return float(best)
