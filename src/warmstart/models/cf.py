"""Collaborative filtering with `implicit` (ALS; BPR as an option), and ALS fold-in for new users."""

from __future__ import annotations

import copy
import functools
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController, threadpool_limits

from warmstart.data.dataset import Dataset
from warmstart.models.arrays import cosine
from warmstart.models.base import ModelConfig, ProfileQuery, Recommender
from warmstart.models.catalogue import Catalogue


class CFConfig(ModelConfig):
    """Matrix-factorisation settings shared by `als` and the warmstart hybrid."""

    algorithm: Literal["als", "bpr"] = "als"
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0  # ALS confidence = 1 + alpha * weight (Hu, Koren & Volinsky 2008)
    iterations: int = 15
    learning_rate: float = 0.01  # BPR only
    bpr_iterations: int = 100
    binarize: bool = False  # treat every interaction as weight 1 (e.g. ratings as plain "seen")
    seed: int = 0
    # 0: every core for ALS, whose per-user solves are independent, so the result is the same;
    # BPR's SGD (Hogwild) is only repeatable on one thread, so 0 means 1 there.
    num_threads: int = 0


def confidence_matrix(matrix: sp.csr_matrix, cfg: CFConfig) -> sp.csr_matrix:
    """Interaction weights -> ALS confidences 1 + alpha*w (BPR uses the binary pattern)."""
    conf = matrix.tocsr().astype(np.float32, copy=True)
    conf.eliminate_zeros()
    if cfg.binarize or cfg.algorithm == "bpr":
        conf.data[:] = 1.0
    if cfg.algorithm == "als":
        conf.data = 1.0 + cfg.alpha * conf.data
    return conf


def fit_factors(matrix: sp.csr_matrix, cfg: CFConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit user and item factors on a users x items weight matrix."""
    conf = confidence_matrix(matrix, cfg)
    # implicit runs its own threads; a multi-threaded BLAS underneath only slows it down.
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if cfg.algorithm == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,
                iterations=cfg.iterations,
                random_state=cfg.seed,
                num_threads=cfg.num_threads,
            )
        else:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(
                factors=cfg.factors,
                learning_rate=cfg.learning_rate,
                regularization=cfg.regularization,
                iterations=cfg.bpr_iterations,
                random_state=cfg.seed,
                num_threads=cfg.num_threads or 1,
            )
        model.fit(conf, show_progress=False)
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    return users, items


# Fewer rows than this are solved on the calling thread. implicit's OpenMP workers spin after
# each solve: on a served visitor (one row) the second worker burned about 6 ms of CPU per request
# at 100,000 items, for a solve that takes a fraction of a millisecond.
PARALLEL_ROWS = 64


def fold_in(
    item_factors: np.ndarray, rows: sp.csr_matrix, regularization: float, *, reuse: bool = False
) -> np.ndarray:
    """ALS user factors for users given as rows of confidences, holding item factors fixed.

    Solves (YᵀY + Yᵤᵀ(Cᵤ − I)Yᵤ + λI) x = YᵤᵀCᵤ1 per row, the same update ALS makes, so a folded-in
    user is scored exactly like a trained one. Works for any item factors (blended ones, or text
    embeddings used as factors). implicit's own solver does the work.

    `reuse=True` keeps YᵀY for the array's memory, for the next call: a model's factors that
    are replaced, or grown below their rows (`hybrid.growth.RowBuffers`), never
    edited in place, qualify. At 100,000 items YᵀY costs far more than one visitor's solve (a
    320-d Gram matrix: about 10^10 operations); after rows are added, only the last block of
    rows is recounted.
    """
    out = np.zeros((rows.shape[0], item_factors.shape[1]), dtype=np.float32)
    # A row without items solves (YᵀY + λI) x = 0: x = 0, no solve needed (text-only visitors).
    rows = rows.tocsr().astype(np.float32, copy=False)
    named = np.flatnonzero(np.diff(rows.indptr) > 0)
    if named.size == 0:
        return out
    given = rows if named.size == rows.shape[0] else rows[named]
    with _blas_controller().limit(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        solver = _solver(item_factors, regularization, reuse)
        if named.size < PARALLEL_ROWS:  # a copy: a kept solver may serve another thread
            solver = copy.copy(solver)
            solver.num_threads = 1
        solved = solver.recalculate_user(np.arange(named.size), given)
    out[named] = np.asarray(solved, dtype=np.float32).reshape(named.size, item_factors.shape[1])
    return out


GRAM_BLOCK = 1024  # rows per block of the YᵀY sum (see _Gram)


class _Gram:
    """YᵀY of a factor array that grows below its rows, summed over fixed blocks of rows.

    Each block of GRAM_BLOCK rows (counted from row 0) contributes its own Gram matrix, in
    float64, and the blocks are added in row order. The sum is then the same for the same
    rows however they arrived: one by one to a running service, or in one batch when a
    restarted one replays its items. A new row costs one block's recount, not the whole
    array's.
    """

    def __init__(self) -> None:
        self.full = np.zeros((0, 0))  # the sum over the complete blocks
        self.blocks = 0  # complete blocks in `full`
        self.rows = 0

    def update(self, y: np.ndarray) -> np.ndarray:
        """YᵀY (float32) of `y`, whose first `self.rows` rows are those counted before."""
        if self.full.shape != (y.shape[1], y.shape[1]):
            self.full = np.zeros((y.shape[1], y.shape[1]))
        complete = y.shape[0] // GRAM_BLOCK
        for b in range(self.blocks, complete):
            block = y[b * GRAM_BLOCK : (b + 1) * GRAM_BLOCK].astype(np.float64)
            self.full = self.full + block.T @ block
        self.blocks = max(self.blocks, complete)
        self.rows = y.shape[0]
        rest = y[complete * GRAM_BLOCK :].astype(np.float64)
        return np.asarray(self.full + rest.T @ rest, dtype=np.float32)


# Per factor array's memory (its own, or the buffer it is a leading view of): that array or
# buffer, its Gram sums, the solver for the rows counted last, and the array it was given.
_SOLVERS: OrderedDict[tuple[int, float], tuple[np.ndarray, _Gram, Any, np.ndarray]] = OrderedDict()
_SOLVERS_KEPT = 4  # a served model's two factor arrays, and another model's during a reload
_SOLVERS_LOCK = threading.Lock()


def _solver(item_factors: np.ndarray, regularization: float, reuse: bool) -> Any:
    """implicit's ALS holding `item_factors`, with YᵀY set (kept for `reuse`)."""
    y = np.ascontiguousarray(item_factors, dtype=np.float32)
    if not reuse:
        return _new_solver(y, regularization, _Gram().update(y))
    owner = item_factors
    base = item_factors.base
    if y is item_factors and isinstance(base, np.ndarray) and base.ctypes.data == y.ctypes.data:
        owner = base  # a leading view shares its first rows with the buffer's earlier views
    key = (id(owner), float(regularization))
    with _SOLVERS_LOCK:
        hit = _SOLVERS.get(key)
        if hit is not None and hit[0] is owner:  # the id of a live object is unique
            _SOLVERS.move_to_end(key)
            _, gram, solver, given = hit
            if given is item_factors:
                return solver
            if owner is item_factors or y.shape[0] < gram.rows:  # not rows added below
                return _new_solver(y, regularization, _Gram().update(y))
        else:
            gram = _Gram()
        solver = _new_solver(y, regularization, gram.update(y))
        _SOLVERS[key] = (owner, gram, solver, item_factors)
        while len(_SOLVERS) > _SOLVERS_KEPT:
            _SOLVERS.popitem(last=False)
        return solver


def _new_solver(y: np.ndarray, regularization: float, yty: np.ndarray) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares

    solver = AlternatingLeastSquares(
        factors=y.shape[1], regularization=regularization, alpha=1.0, num_threads=0
    )
    solver.item_factors = y
    solver._YtY = yty  # implicit's cached YᵀY (its `YtY` property computes it when None)
    return solver


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """One controller for the process: building one scans the loaded libraries (~10 ms), which a
    served request folding in a visitor should not pay each time."""
    return ThreadpoolController()


def profile_rows(queries: Sequence[ProfileQuery], n_items: int) -> sp.csr_matrix:
    """Binary rows (queries x items) of the items each visitor named."""
    rows = np.repeat(np.arange(len(queries)), [len(q.items) for q in queries])
    cols = np.concatenate([q.items for q in queries]) if queries else np.empty(0, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(queries), n_items)
    )


class ALSRecommender(Recommender):
    """Plain collaborative filtering: implicit's ALS (or BPR). Visitors who name items are folded in."""

    name = "als"
    Config = CFConfig
    config: CFConfig

    saved_arrays = ("user_factors", "item_factors")

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self.user_factors = np.empty((0, 0), dtype=np.float32)
        self.item_factors = np.empty((0, 0), dtype=np.float32)

    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None:
        self.user_factors, self.item_factors = fit_factors(catalogue.seen, self.config)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        rows = profile_rows(queries, self.catalogue.n_items)
        users = fold_in(
            self.item_factors, confidence_matrix(rows, self.config), self.config.regularization
        )
        scores = users @ self.item_factors.T
        empty = np.diff(rows.indptr) == 0
        scores[empty] = self._pop()  # nothing to fold in: popularity
        return scores

    def _similar_scores(self, items: np.ndarray) -> np.ndarray:
        return cosine(self.item_factors[items], self.item_factors)

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        return cosine(self.item_factors[[item]], self.item_factors[others])[0]
