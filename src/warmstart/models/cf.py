"""Collaborative filtering with `implicit` (ALS; BPR as an option), and ALS fold-in for new users."""

from __future__ import annotations

import copy
import functools
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController, threadpool_limits

from warmstart.data.dataset import Dataset
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
                num_threads=cfg.num_threads,
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

    `reuse=True` keeps the solver, with its YᵀY, for this exact array object, for the next
    call: a model's factors that are replaced, never edited in place, qualify. At 100,000 items
    YᵀY costs far more than one visitor's solve (a 320-d Gram matrix: about 10^10 operations).
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


_SOLVERS: OrderedDict[tuple[int, float], tuple[np.ndarray, Any]] = OrderedDict()
_SOLVERS_KEPT = 4  # a served model's two factor arrays, and another model's during a reload
_SOLVERS_LOCK = threading.Lock()


def _solver(item_factors: np.ndarray, regularization: float, reuse: bool) -> Any:
    """implicit's ALS holding `item_factors`, with YᵀY computed (kept for `reuse`)."""
    from implicit.cpu.als import AlternatingLeastSquares

    key = (id(item_factors), float(regularization))
    if reuse:
        with _SOLVERS_LOCK:
            hit = _SOLVERS.get(key)
            if hit is not None and hit[0] is item_factors:  # the id of a live object is unique
                _SOLVERS.move_to_end(key)
                return hit[1]
    y = np.ascontiguousarray(item_factors, dtype=np.float32)
    solver = AlternatingLeastSquares(
        factors=y.shape[1], regularization=regularization, alpha=1.0, num_threads=0
    )
    solver.item_factors = y
    _ = solver.YtY  # computed once here, cached on the solver
    if reuse:
        with _SOLVERS_LOCK:
            _SOLVERS[key] = (item_factors, solver)
            while len(_SOLVERS) > _SOLVERS_KEPT:
                _SOLVERS.popitem(last=False)
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
        return _cosine(self.item_factors[items], self.item_factors)

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        return _cosine(self.item_factors[[item]], self.item_factors[others])[0]

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-9)
    bn = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-9)
    return np.asarray(an @ bn.T, dtype=np.float32)


def _standardise(scores: np.ndarray) -> np.ndarray:
    """Each row to mean 0, standard deviation 1, so scores of different kinds can be added."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True) + 1e-9
    return np.asarray((scores - mean) / std, dtype=np.float32)
