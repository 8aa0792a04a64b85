"""Offline metrics as small frozen value objects, with per-user values for confidence intervals and
paired significance tests.

Ranking metrics take `reco`, an (n_users, K) int array of internal item ids ranked best first and
padded with -1, and `truth`, an (n_users, n_items) sparse matrix whose stored nonzeros mark the
user's relevant test items. Recall is hits / n_relevant (the ColdRec / ALDI / RecTools convention),
so it is not capped at 1 by k.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from scipy.stats import wilcoxon

__all__ = [
    "AUC",
    "MAE",
    "MAP",
    "MRR",
    "NDCG",
    "RMSE",
    "CappedRecall",
    "Coverage",
    "HitRate",
    "Metric",
    "Precision",
    "Recall",
    "bootstrap_ci",
    "hit_matrix",
    "paired_test",
    "ranking_metrics",
]

# Elements per temporary block in AUC and the bootstrap, to keep memory bounded (~32 MB of float64).
_BLOCK = 1 << 22


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _relevant_keys(truth: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique `row * n_items + item` keys of the relevant entries, and their count per row.

    Going through keys drops explicit zeros and duplicate entries, so non-canonical CSR is fine.
    """
    n_users, n_items = truth.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(truth.indptr))
    nonzero = truth.data != 0
    keys = rows[nonzero] * n_items + truth.indices[nonzero].astype(np.int64)
    if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
        # np.unique hashes before sorting, which is slower than a sort here.
        keys = np.sort(keys)
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    counts = np.bincount(keys // max(n_items, 1), minlength=n_users).astype(np.int64)
    return keys, counts


def _hits_and_counts(
    reco: np.ndarray, truth: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    _check_k(k)
    reco = np.asarray(reco)
    if reco.ndim != 2:
        raise ValueError(f"reco must be 2-D (n_users, K), got shape {reco.shape}")
    if reco.size and not np.issubdtype(reco.dtype, np.integer):
        raise ValueError(f"reco must hold integer item ids, got dtype {reco.dtype}")
    truth = sp.csr_matrix(truth)
    n_users, n_items = truth.shape
    if reco.shape[0] != n_users:
        raise ValueError(f"reco has {reco.shape[0]} rows but truth has {n_users}")
    top = reco[:, :k].astype(np.int64)
    if top.size and (top.min() < -1 or top.max() >= n_items):
        raise ValueError(f"reco ids must lie in [-1, {n_items}), got [{top.min()}, {top.max()}]")

    keys, counts = _relevant_keys(truth)
    hits = np.zeros((n_users, k), dtype=bool)
    if keys.size and top.size:
        query = np.arange(n_users, dtype=np.int64)[:, None] * n_items + top
        pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
        found = (keys[pos] == query) & (top >= 0)
        if top.shape[1] > 1:
            # A repeated id is one recommendation: only its first position can hit.
            order = np.argsort(top, axis=1, kind="stable")
            ranked = np.take_along_axis(top, order, axis=1)
            repeat = np.zeros_like(found)
            np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
            found &= ~repeat
        hits[:, : top.shape[1]] = found
    return hits, counts


def hit_matrix(reco: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Boolean (n_users, k) matrix: is the item at position i of the user's list relevant?

    Shared by all ranking metrics so the id lookup is done one way. Columns past reco's width are
    False (a short list cannot hit there), -1 padding never hits, and a repeated id hits only at
    its first position.
    """
    return _hits_and_counts(reco, truth, k)[0]


class Metric(Protocol):
    """What the runner needs from a ranking metric."""

    @property
    def k(self) -> int: ...

    @property
    def name(self) -> str: ...

    def calc_per_user(self, reco: np.ndarray, truth: sp.csr_matrix) -> np.ndarray: ...

    def calc(self, reco: np.ndarray, truth: sp.csr_matrix) -> float: ...


@dataclass(frozen=True)
class _RankingMetric(ABC):
    """Shared plumbing: metrics differ only in how they turn the hit matrix into a number."""

    k: int

    def __post_init__(self) -> None:
        _check_k(self.k)

    @property
    def name(self) -> str:
        """Report key, e.g. "ndcg@20"."""
        return f"{type(self).__name__.lower()}@{self.k}"

    def calc_per_user(self, reco: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
        """One float64 value per row; rows with no relevant items get 0."""
        hits, n_relevant = _hits_and_counts(reco, truth, self.k)
        return self._from_hits(hits, n_relevant).astype(np.float64, copy=False)

    def calc(self, reco: np.ndarray, truth: sp.csr_matrix) -> float:
        """Mean over users; nan when there are no users rather than a numpy warning."""
        values = self.calc_per_user(reco, truth)
        return float(values.mean()) if values.size else float("nan")

    @abstractmethod
    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray: ...


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class Recall(_RankingMetric):
    """hits@k / n_relevant."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        return _safe_divide(hits.sum(axis=1), n_relevant)


@dataclass(frozen=True)
class CappedRecall(_RankingMetric):
    """hits@k / min(n_relevant, k): a user with more than k relevant items can still reach 1.
    For choosing settings on held-out data, where users differ widely in how much is held out."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        return _safe_divide(hits.sum(axis=1), np.minimum(n_relevant, self.k))


@dataclass(frozen=True)
class Precision(_RankingMetric):
    """hits@k / k, also when the list is shorter than k."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        return hits.sum(axis=1) / self.k


@dataclass(frozen=True)
class NDCG(_RankingMetric):
    """Binary-relevance DCG@k over the DCG of min(n_relevant, k) hits at the top."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        discounts = 1.0 / np.log2(np.arange(2, self.k + 2))
        dcg = hits @ discounts
        ideal = np.concatenate(([0.0], np.cumsum(discounts)))[np.minimum(n_relevant, self.k)]
        return _safe_divide(dcg, ideal)


@dataclass(frozen=True)
class HitRate(_RankingMetric):
    """1 if anything relevant is in the top k."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        return np.asarray(hits.any(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class MRR(_RankingMetric):
    """Reciprocal rank of the first hit within the top k, else 0."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        first = np.argmax(hits, axis=1)
        return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


@dataclass(frozen=True)
class MAP(_RankingMetric):
    """Sum of precision@i over hit positions i <= k, over min(n_relevant, k)."""

    def _from_hits(self, hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
        precision_at = np.cumsum(hits, axis=1) / np.arange(1, self.k + 1)
        return _safe_divide((precision_at * hits).sum(axis=1), np.minimum(n_relevant, self.k))


def ranking_metrics(ks: Sequence[int]) -> list[Metric]:
    """Recall, Precision, NDCG, HitRate, MRR and MAP for each k, in that order per k."""
    classes: tuple[type[_RankingMetric], ...] = (Recall, Precision, NDCG, HitRate, MRR, MAP)
    return [cls(k) for k in ks for cls in classes]


def _count_sorted_below(
    sorted_rows: np.ndarray,
    lengths: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
    *,
    inclusive: bool,
) -> np.ndarray:
    """Per query, how many of the first `lengths[row]` entries of sorted row `row` are < value
    (<= when inclusive): a binary search vectorised over all queries at once."""
    lo = np.zeros(values.shape[0], dtype=np.int64)
    hi = lengths[rows].astype(np.int64)
    width = sorted_rows.shape[1]
    for _ in range(max(width, 1).bit_length()):
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        probe = sorted_rows[rows, np.minimum(mid, max(width - 1, 0))]
        right = (probe <= values if inclusive else probe < values) & active
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return lo


@dataclass(frozen=True)
class AUC:
    """Per-user ROC AUC of full-catalogue scores: P(random relevant item outranks a random
    negative), ties counting one half.

    Items scored -inf are not candidates. Every other item that is not relevant is a negative. A
    relevant item scored -inf is still counted as a positive, ranked below every negative: it was a
    test item the model could not score, which should cost it rather than vanish. Users without
    positives or without negatives get nan.
    """

    @property
    def name(self) -> str:
        """Report key."""
        return "auc"

    def calc_per_user(self, scores: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
        """One value per row of `scores`, nan where AUC is undefined."""
        scores = np.asarray(scores)
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        truth = sp.csr_matrix(truth)
        if scores.ndim != 2 or scores.shape != truth.shape:
            raise ValueError(f"scores {scores.shape} and truth {truth.shape} must have one shape")
        n_users, n_items = scores.shape
        out = np.full(n_users, np.nan, dtype=np.float64)
        step = max(1, _BLOCK // max(n_items, 1))
        for start in range(0, n_users, step):
            stop = min(start + step, n_users)
            block = scores[start:stop]
            if np.isnan(block).any():
                raise ValueError("scores contain nan; mark non-candidates with -inf instead")
            positive = truth[start:stop].toarray() != 0
            negative = ~positive & (block > -np.inf)
            n_pos = positive.sum(axis=1)
            n_neg = negative.sum(axis=1)
            # Non-negatives become +inf so each row's first n_neg sorted entries are its negatives.
            negatives_sorted = np.sort(np.where(negative, block, np.inf), axis=1)
            rows, cols = np.nonzero(positive)
            values = block[rows, cols]
            below = _count_sorted_below(negatives_sorted, n_neg, rows, values, inclusive=False)
            at_or_below = _count_sorted_below(negatives_sorted, n_neg, rows, values, inclusive=True)
            wins = np.bincount(
                rows, weights=(below + at_or_below) / 2.0, minlength=stop - start
            ).astype(np.float64)
            pairs = n_pos * n_neg
            out[start:stop] = np.where(pairs > 0, wins / np.maximum(pairs, 1), np.nan)
        return out

    def calc(self, scores: np.ndarray, truth: sp.csr_matrix) -> float:
        """Mean over users where AUC is defined; nan if it is defined for none."""
        values = self.calc_per_user(scores, truth)
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")


@dataclass(frozen=True)
class Coverage:
    """Share of the candidate items that appear in anyone's top k: a catalogue-level number, so
    there are no per-user values."""

    k: int

    def __post_init__(self) -> None:
        _check_k(self.k)

    @property
    def name(self) -> str:
        """Report key, e.g. "coverage@10"."""
        return f"coverage@{self.k}"

    def calc(self, reco: np.ndarray, n_candidates: int) -> float:
        """Distinct ids (not -1) in the first k columns over all users, over n_candidates."""
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        reco = np.asarray(reco)
        if reco.ndim != 2:
            raise ValueError(f"reco must be 2-D (n_users, K), got shape {reco.shape}")
        top = reco[:, : self.k]
        return float(np.unique(top[top >= 0]).size / n_candidates)


def _check_pairs(pred: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    actual = np.asarray(actual, dtype=np.float64).ravel()
    if pred.shape != actual.shape:
        raise ValueError(f"pred has {pred.size} values but actual has {actual.size}")
    return pred, actual


def _per_user_mean(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    users = np.asarray(users).ravel()
    if users.shape != values.shape:
        raise ValueError(f"users has {users.size} values but there are {values.size} pairs")
    _, inverse = np.unique(users, return_inverse=True)
    inverse = inverse.ravel()
    return np.bincount(inverse, weights=values) / np.bincount(inverse)


class _PairError(ABC):
    """Error of rating predictions against the actual ratings: the mean of a per-pair loss over
    all pairs or over each user's, then `_finish` (a square root for RMSE)."""

    @property
    def name(self) -> str:
        """Report key."""
        return type(self).__name__.lower()

    def calc_per_user(self, pred: np.ndarray, actual: np.ndarray, users: np.ndarray) -> np.ndarray:
        """The error over each user's pairs, for the distinct users in ascending order."""
        pred, actual = _check_pairs(pred, actual)
        return self._finish(_per_user_mean(self._loss(pred - actual), users))

    def calc(self, pred: np.ndarray, actual: np.ndarray) -> float:
        """The error over all pairs (not a mean of per-user values); nan when there are none."""
        pred, actual = _check_pairs(pred, actual)
        if not pred.size:
            return float("nan")
        return float(self._finish(np.mean(self._loss(pred - actual))))

    @abstractmethod
    def _loss(self, error: np.ndarray) -> np.ndarray: ...

    def _finish(self, mean: np.ndarray) -> np.ndarray:
        return mean


@dataclass(frozen=True)
class RMSE(_PairError):
    """Root mean squared error of rating predictions."""

    def _loss(self, error: np.ndarray) -> np.ndarray:
        return np.asarray(error**2)

    def _finish(self, mean: np.ndarray) -> np.ndarray:
        return np.sqrt(mean)


@dataclass(frozen=True)
class MAE(_PairError):
    """Mean absolute error of rating predictions."""

    def _loss(self, error: np.ndarray) -> np.ndarray:
        return np.abs(error)


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users, nan values ignored.

    Resamples are drawn in blocks so memory stays bounded for many users; (nan, nan) when no
    values remain.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    step = max(1, _BLOCK // n)
    for start in range(0, n_resamples, step):
        stop = min(start + step, n_resamples)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value that paired per-user values a and b differ.

    Pairs with a nan on either side are dropped; zero differences are split between the signs
    ("zsplit") so ties with the baseline dilute rather than vanish. 1.0 when no pair differs.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a has {a.size} values but b has {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if not np.any(a != b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue)
