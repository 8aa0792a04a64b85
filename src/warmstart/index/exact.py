"""Exact top-k by matrix product and partial sort, with per-query exclusion of already-seen items."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

_CHUNK = 1024


def topk(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    *,
    copy: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of `scores`, best first, ties broken by lower column id.

    `exclude` (rows aligned with `scores`) marks columns that may not be returned. Rows with fewer
    than k admissible columns are padded with id -1 and score -inf.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    scores = np.array(scores, dtype=np.float32, copy=copy, ndmin=2)
    n_rows, n_cols = scores.shape
    if exclude is not None:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    kk = min(k, n_cols)
    if kk < n_cols:
        # Everything above the k-th best score, then ties at the cut in column order.
        cut = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1 : kk]
        above = scores > cut
        tied = scores == cut
        room = kk - above.sum(axis=1)
        # Only rows with more ties at the cut than room left need the (costly) running count.
        crowded = np.flatnonzero(tied.sum(axis=1) > room)
        if crowded.size:
            ties = tied[crowded]
            tied[crowded] = ties & (np.cumsum(ties, axis=1) <= room[crowded, None])
        keep = above | tied
        part = np.nonzero(keep)[1].reshape(n_rows, kk)
    else:
        part = np.tile(np.arange(n_cols), (n_rows, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1)
    ids[~np.isfinite(top)] = -1
    if kk < k:
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return ids, top


class Index(Protocol):
    """What a model needs from retrieval: add vectors, and search by inner product."""

    @property
    def size(self) -> int: ...

    @property
    def vectors(self) -> np.ndarray: ...

    def add(self, vectors: np.ndarray) -> np.ndarray: ...

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class ExactIndex:
    """Brute-force inner-product search; exact, and fast enough for catalogues up to ~10^5 items."""

    def __init__(self, vectors: np.ndarray) -> None:
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._vectors.ndim != 2:
            raise ValueError("index vectors must be a 2-D array")

    @property
    def size(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors; returns their positions."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self._vectors.shape[1])
        start = self.size
        self._vectors = np.ascontiguousarray(np.vstack([self._vectors, vectors]))
        return np.arange(start, self.size)

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        ids_out, scores_out = [], []
        for start in range(0, queries.shape[0], _CHUNK):
            stop = min(start + _CHUNK, queries.shape[0])
            scores = queries[start:stop] @ self._vectors.T
            ex = None if exclude is None else exclude[start:stop]
            ids, top = topk(scores, k, ex, copy=False)
            ids_out.append(ids)
            scores_out.append(top)
        if not ids_out:
            return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
        return np.vstack(ids_out), np.vstack(scores_out)
