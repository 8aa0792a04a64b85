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
