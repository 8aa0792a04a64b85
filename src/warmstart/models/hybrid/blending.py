"""The arithmetic of the hybrid's blends: collaborative weight by interaction count, the fading
popularity prior, exact standardising of sparse terms and of candidate columns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from warmstart.data.dataset import Dataset
from warmstart.models.arrays import binary, cosine_knn


def interaction_weight(n: np.ndarray, lam: float) -> np.ndarray:
    """w(n) = n / (n + lambda); lambda = 0 trusts any interaction fully."""
    if lam <= 0:
        return (n > 0).astype(np.float32)
    return (n / (n + lam)).astype(np.float32)


def popularity_fade(n: np.ndarray, fade: float, lam: float) -> np.ndarray:
    """How much of the popularity prior a user with n events keeps: fade^n (1 - w(n)).

    The per-event factor is what lets a newcomer's few clicks outweigh the prior; 1 - w(n)
    alone (lambda_users is about 10) left two thirds of it after five clicks.
    """
    return np.asarray(np.power(fade, n) * (1.0 - interaction_weight(n, lam)), dtype=np.float32)


def time_ranks(dataset: Dataset) -> sp.csr_matrix | None:
    """users x items: 1 + the interaction's rank in time (ties by position); None without times."""
    if dataset.timestamps is None:
        return None
    rank = np.empty(dataset.n_interactions, dtype=np.float64)
    rank[np.argsort(dataset.timestamps, kind="stable")] = np.arange(1, dataset.n_interactions + 1)
    return sp.csr_matrix(
        (rank, (dataset.users, dataset.items)), shape=(dataset.n_users, dataset.n_items)
    )


def covariance(vectors: np.ndarray) -> np.ndarray:
    """Covariance of item vectors: the spread of u . v over items is sqrt(u' C u)."""
    v = np.asarray(vectors, dtype=np.float64)
    centred = v - v.mean(axis=0, keepdims=True)
    return np.asarray(centred.T @ centred / max(len(v), 1), dtype=np.float32)


def per_user_scaled(users: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Rows divided by the standard deviation of their scores over the catalogue (0 stays 0)."""
    u = np.asarray(users, dtype=np.float32)
    sd = np.sqrt(np.maximum(np.sum((u @ cov) * u, axis=1), 0.0))
    return np.asarray(u / np.where(sd > 1e-12, sd, 1.0)[:, None], dtype=np.float32)


@dataclass(frozen=True)
class ColdBlend:
    """The cold-user blend's weights: z(score) + neighbour_weight z(named items' neighbours) +
    popularity_weight popularity_fade^n (1 - w(n)) z(popularity).

    A value, passed to each scoring call: a service or an experiment's arm scores with its own
    blend without touching the model that other requests share.
    """

    neighbour_weight: float = 0.0
    popularity_weight: float = 0.0
    popularity_fade: float = 1.0

    def with_overrides(self, overrides: Mapping[str, float] | None) -> ColdBlend:
        """This blend with some weights replaced (`neighbour_weight`, `popularity_weight`,
        `popularity_fade`); KeyError names any other key."""
        if not overrides:
            return self
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise KeyError(f"unknown cold-user blend setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: float(v) for k, v in overrides.items()})


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
    blend: ColdBlend = ColdBlend()  # the cold-user blend these parts were resolved for


@dataclass(frozen=True)
class Columns:
    """Scores computed for `cols` only; `mean` and `sd` are each row's dense-term mean and
    spread over every item (from `ItemMoments`), so standardising them is exact."""

    cols: np.ndarray
    mean: np.ndarray
    sd: np.ndarray

    def standardise(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray((scores - self.mean[:, None]) / self.sd[:, None], dtype=np.float32)


def standardise_sparse(rows: sp.csr_matrix, cols: np.ndarray | None) -> np.ndarray:
    """`standardise` of sparse rows over all their columns (zeros included), exactly, without
    densifying them; then only `cols` (all columns when None)."""
    n = rows.shape[1]
    rows = rows.tocsr()
    if not rows.has_canonical_format:  # a repeated column counts once, squared once
        rows = rows.copy()
        rows.sum_duplicates()
    values = rows.data.astype(np.float64)
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    sums = np.bincount(row_of, weights=values, minlength=rows.shape[0])
    squares = np.bincount(row_of, weights=values * values, minlength=rows.shape[0])
    mean = sums / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0)) + 1e-9
    dense = rows.toarray().astype(np.float64) if cols is None else dense_columns(rows, cols)
    return np.asarray((dense - mean[:, None]) / std[:, None], dtype=np.float32)


def dense_columns(rows: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
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


def neighbour_matrix(
    seen: sp.csr_matrix, neighbours: int, popularity_penalty: float
) -> sp.csr_matrix:
    """Each item's `neighbours` nearest by cosine of who picked them, each neighbour j's
    similarity divided by n_j ** popularity_penalty: what people specifically pick with an
    item, not what everybody picks anyway (the popularity term's job)."""
    sim = cosine_knn(binary(seen), neighbours)
    if popularity_penalty:
        counts = np.maximum(np.bincount(seen.indices, minlength=seen.shape[1]), 1)
        penalty = counts.astype(np.float32) ** -popularity_penalty
        sim = sp.csr_matrix(sim @ sp.diags(penalty), dtype=np.float32)
    return sim
