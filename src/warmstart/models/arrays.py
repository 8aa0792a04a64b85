"""Array helpers the models share: similarities, per-row standardising, sparse matrices saved
as plain arrays."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp


def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Every stored non-zero as 1.0 (float32): who picked what, whatever the strength."""
    out = matrix.tocsr().astype(np.float32, copy=True)
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def summed_rows(rows: sp.csr_matrix, matrix: sp.csr_matrix) -> sp.csr_matrix:
    """`binary(rows) @ matrix` as float32 CSR: per row, the sum of `matrix`'s rows at its
    non-zeros (a history's neighbour similarities).

    Where the rows gather few entries for `matrix`'s width (a request's history in a large
    catalogue), they are gathered and summed here, in the product's order (equal to the bit):
    scipy's product clears work arrays as wide as `matrix` on every call, which then costs more
    than the sums (measured crossover near a 200th of the width).
    """
    ones = binary(rows)
    starts = matrix.indptr[ones.indices]
    lengths = matrix.indptr[ones.indices + 1] - starts
    total = int(lengths.sum())
    n_rows, width = ones.shape[0], matrix.shape[1]
    if total * 256 > width:
        return sp.csr_matrix(ones @ matrix, dtype=np.float32)
    ends = np.cumsum(lengths)
    at = np.repeat(starts - (ends - lengths), lengths) + np.arange(total)
    row_of = np.repeat(np.repeat(np.arange(n_rows), np.diff(ones.indptr)), lengths)
    keys, slot = np.unique(row_of * np.int64(width) + matrix.indices[at], return_inverse=True)
    sums = np.zeros(keys.size, dtype=np.result_type(np.float32, matrix.dtype))
    np.add.at(sums, slot, matrix.data[at])
    kept = sums != 0
    keys, sums = keys[kept], sums[kept]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // width, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix(
        (sums.astype(np.float32), keys % width, indptr), shape=(n_rows, width), dtype=np.float32
    )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with each row of `b` (zero rows give 0)."""
    an = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-9)
    bn = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-9)
    return np.asarray(an @ bn.T, dtype=np.float32)


def cosine_knn(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Cosine similarity between the columns of `matrix`, top-k per column (implicit's kNN)."""
    from implicit.nearest_neighbours import CosineRecommender

    knn = CosineRecommender(K=k)
    with warnings.catch_warnings():
        # implicit converts our CSR input to COO itself and then warns about it
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        knn.fit(matrix, show_progress=False)
    sim = knn.similarity.tocsr().astype(np.float32)
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each row to mean 0, standard deviation 1, so scores of different kinds can be added."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True) + 1e-9
    return np.asarray((scores - mean) / std, dtype=np.float32)


def csr_state(matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A sparse similarity matrix as the plain arrays a model folder saves (`csr_from_state`)."""
    m = matrix.tocsr()
    return {
        "sim_indptr": m.indptr.astype(np.int64),
        "sim_indices": m.indices.astype(np.int32),
        "sim_data": m.data.astype(np.float32),
        "sim_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_state(arrays: Mapping[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays["sim_shape"])
    return sp.csr_matrix(
        (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]), shape=shape
    )
