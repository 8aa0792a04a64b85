"""Exact catalogue-wide mean and spread of linear scores, without scoring every item."""

from __future__ import annotations

import numpy as np

_CHUNK = 8192  # rows per block while summing, bounding the float64 copy


class ItemMoments:
    """Count, sum and Gram matrix of the rows of one item matrix X (n, D), in float64.

    A score that is linear in the item, s_i = u · x_i, has over all n items the mean u · μ and
    the variance uᵀ Σ u (μ = Σx/n, Σ = XᵀX/n − μμᵀ), and two such scores on different columns
    of X have the covariance uᵀ Σ_ab v. So a service that scores only a few hundred candidate
    items can still standardise their scores exactly as if it had scored all of them. Adding
    or replacing items updates the moments in O(D²) per item instead of re-reading X.
    """

    def __init__(self, *parts: np.ndarray) -> None:
        """X is `parts` side by side (same number of rows), read a block of rows at a time."""
        d = sum(p.shape[1] for p in parts)
        self.n = 0
        self._total = np.zeros(d, dtype=np.float64)
        self._gram = np.zeros((d, d), dtype=np.float64)
        self._cov: np.ndarray | None = None
        for start in range(0, parts[0].shape[0], _CHUNK):
            self.add(np.hstack([p[start : start + _CHUNK] for p in parts]))

    @property
    def dim(self) -> int:
        return int(self._total.shape[0])

    def copy(self) -> ItemMoments:
        """An independent copy: updating it leaves this one as it was."""
        out = ItemMoments.__new__(ItemMoments)
        out.n, out._total, out._gram, out._cov = self.n, self._total.copy(), self._gram.copy(), None
        return out

    def add(self, rows: np.ndarray) -> None:
        """Count `rows` (m, D) as items too."""
        for start in range(0, rows.shape[0], _CHUNK):
            block = np.asarray(rows[start : start + _CHUNK], dtype=np.float64)
            self._total += block.sum(axis=0)
            self._gram += block.T @ block
        self.n += rows.shape[0]
        self._cov = None

    def replace(self, old: np.ndarray, new: np.ndarray) -> None:
        """Items whose rows changed from `old` to `new` (same shape)."""
        if old.shape != new.shape:
            raise ValueError(f"old rows {old.shape} and new rows {new.shape} differ in shape")
        a, b = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
        self._total += b.sum(axis=0) - a.sum(axis=0)
        self._gram += b.T @ b - a.T @ a
        self._cov = None

    @property
    def mean(self) -> np.ndarray:
        return self._total / max(self.n, 1)

    @property
    def cov(self) -> np.ndarray:
        """Population covariance (what numpy's default `std` uses); kept until the next change."""
        if self._cov is None:
            mu = self.mean
            self._cov = self._gram / max(self.n, 1) - np.outer(mu, mu)
        return self._cov

    def spread(self, u: np.ndarray, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Per row of `u` (m, len(cols)): mean and standard deviation of u · x_i[cols] over items."""
        u64 = np.asarray(u, dtype=np.float64)
        mean = u64 @ self.mean[cols]
        var = np.sum((u64 @ self.cov[cols, cols]) * u64, axis=1)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def covariance(self, u: np.ndarray, a: slice, v: np.ndarray, b: slice) -> np.ndarray:
        """Per row: the covariance over items of u · x_i[a] and v · x_i[b]."""
        u64, v64 = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        return np.sum((u64 @ self.cov[a, b]) * v64, axis=1)
