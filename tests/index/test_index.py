"""Exact top-k and ExactIndex against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from warmstart.index import ExactIndex, topk
from warmstart.index.exact import _CHUNK


def reference_topk(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Full stable sort per row: best score first, ties by lower column id, -1 / -inf padding."""
    scores = np.array(scores, dtype=np.float32, ndmin=2)
    mask = np.zeros(scores.shape, dtype=bool)
    if exclude is not None:
        mask = exclude.toarray() != 0
    n_rows = scores.shape[0]
    ids = np.full((n_rows, k), -1, dtype=np.int64)
    top = np.full((n_rows, k), -np.inf, dtype=np.float32)
    for r in range(n_rows):
        allowed = np.flatnonzero(~mask[r] & np.isfinite(scores[r]))
        order = allowed[np.argsort(-scores[r, allowed], kind="stable")][:k]
        ids[r, : len(order)] = order
        top[r, : len(order)] = scores[r, order]
    return ids, top


def random_exclude(
    rng: np.random.Generator, shape: tuple[int, int], density: float
) -> sp.csr_matrix:
    mask = rng.random(shape) < density
    return sp.csr_matrix(mask.astype(np.float32))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_topk_matches_reference(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(23, 40)).astype(np.float32)
    exclude = random_exclude(rng, scores.shape, 0.3)
    for ex in (None, exclude):
        ids, top = topk(scores, k, ex)
        ref_ids, ref_top = reference_topk(scores, k, ex)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(top, ref_top)
        assert ids.dtype == np.int64 and top.dtype == np.float32


def tie_heavy_cases() -> list[tuple[np.ndarray, int, sp.csr_matrix | None]]:
    """Scores from a handful of values: many ties, including at the top-k cut."""
    cases = []
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        scores = rng.integers(0, 3, size=(30, 12)).astype(np.float32)
        exclude = random_exclude(rng, scores.shape, 0.2)
        for k in (1, 4, 7, 12):
            cases += [(scores, k, None), (scores, k, exclude)]
    return cases


def test_topk_ties_keep_scores_and_order() -> None:
    """What holds even with ties at the cut: the same scores as the reference, each returned row
    ordered best first with ties by lower id, and no excluded or repeated id."""
    for scores, k, ex in tie_heavy_cases():
        ids, top = topk(scores, k, ex)
        ref_ids, ref_top = reference_topk(scores, k, ex)
        np.testing.assert_array_equal(top, ref_top)
        mask = ex.toarray() != 0 if ex is not None else np.zeros(scores.shape, dtype=bool)
        for r in range(scores.shape[0]):
            row = ids[r][ids[r] >= 0]
            assert len(set(row)) == len(row) == (ref_ids[r] >= 0).sum()
            assert not mask[r, row].any()
            np.testing.assert_array_equal(scores[r, row], top[r, : len(row)])
            key = list(zip(-scores[r, row], row, strict=True))
            assert key == sorted(key), "ties inside the top-k must be ordered by lower id"


def test_topk_ties_at_the_cut_broken_by_lower_id() -> None:
    failures = []
    for n, (scores, k, ex) in enumerate(tie_heavy_cases()):
        ids, _ = topk(scores, k, ex)
        ref_ids, _ = reference_topk(scores, k, ex)
        if not np.array_equal(ids, ref_ids):
            failures.append(n)
    # smallest known case: two of the four tied 1s are wanted, the lowest ids 1, 3, 5
    ids, _ = topk(np.array([[0, 1, 0, 1, 0, 1, 0, 1, 0]], dtype=np.float32), 3)
    assert ids.tolist() == [[1, 3, 5]] and not failures, f"{len(failures)} cases differ"


def test_topk_all_tied() -> None:
    ids, top = topk(np.zeros((2, 6), dtype=np.float32), 4)
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(top, np.zeros((2, 4)))


def test_topk_pads_when_k_exceeds_columns() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]], dtype=np.float32)
    ids, top = topk(scores, 5)
    np.testing.assert_array_equal(ids, [[1, 2, 0, -1, -1], [0, 1, 2, -1, -1]])
    assert np.isneginf(top[:, 3:]).all()
    np.testing.assert_array_equal(top[:, :3], np.float32([[0.9, 0.5, 0.1], [3.0, 2.0, 1.0]]))


def test_topk_pads_excluded_items() -> None:
    """Fewer admissible columns than k: the excluded ones are never returned, the rest is padding."""
    scores = np.array([[0.1, 0.9, 0.5, 0.3]], dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 1]], dtype=np.float32))
    ids, top = topk(scores, 3, exclude)
    np.testing.assert_array_equal(ids, [[2, 0, -1]])
    np.testing.assert_array_equal(top[0, :2], np.float32([0.5, 0.1]))
    assert np.isneginf(top[0, 2])
    ids, _ = topk(scores, 4, sp.csr_matrix(np.ones((1, 4), dtype=np.float32)))
    np.testing.assert_array_equal(ids, [[-1, -1, -1, -1]])


def test_topk_neg_inf_scores_are_padding() -> None:
    scores = np.array([[1.0, -np.inf, 0.5]], dtype=np.float32)
    ids, top = topk(scores, 3)
    np.testing.assert_array_equal(ids, [[0, 2, -1]])
    assert np.isneginf(top[0, 2])


def test_topk_does_not_modify_input_by_default() -> None:
    scores = np.array([[0.1, 0.9, 0.5]], dtype=np.float32)
    before = scores.copy()
    topk(scores, 2, sp.csr_matrix(np.array([[1, 0, 0]], dtype=np.float32)))
    np.testing.assert_array_equal(scores, before)


def test_topk_one_dimensional_and_empty() -> None:
    ids, top = topk(np.array([0.2, 0.7, 0.1], dtype=np.float32), 2)
    np.testing.assert_array_equal(ids, [[1, 0]])
    ids, top = topk(np.empty((0, 5), dtype=np.float32), 3)
    assert ids.shape == (0, 3) and top.shape == (0, 3)


@pytest.mark.parametrize("k", [0, -2])
def test_topk_rejects_non_positive_k(k: int) -> None:
    with pytest.raises(ValueError):
        topk(np.zeros((1, 3), dtype=np.float32), k)


# ---- ExactIndex -------------------------------------------------------------------------
def test_exact_index_across_chunk_boundary() -> None:
    rng = np.random.default_rng(7)
    n_queries = _CHUNK * 2 + 37  # three chunks, the last one partial
    assert n_queries > 1024
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(n_queries, 8)).astype(np.float32)
    exclude = random_exclude(rng, (n_queries, 50), 0.1)
    index = ExactIndex(vectors)
    assert index.size == 50
    for ex in (None, exclude):
        ids, top = index.search(queries, 10, ex)
        ref_ids, ref_top = topk(queries @ vectors.T, 10, ex)
        assert ids.shape == top.shape == (n_queries, 10)
        np.testing.assert_array_equal(ids, ref_ids)
        # a product in chunks may round the last bit differently from one product (BLAS kernels)
        np.testing.assert_allclose(top, ref_top, rtol=1e-6)
    # and against the brute-force sort, on rows either side of each boundary
    rows = np.array([0, _CHUNK - 1, _CHUNK, 2 * _CHUNK - 1, 2 * _CHUNK, n_queries - 1])
    ids, _ = index.search(queries, 10, exclude)
    ref_ids, _ = reference_topk(queries[rows] @ vectors.T, 10, exclude[rows])
    np.testing.assert_array_equal(ids[rows], ref_ids)


def test_exact_index_pads_and_handles_single_and_empty_queries() -> None:
    vectors = np.eye(3, dtype=np.float32)
    index = ExactIndex(vectors)
    ids, top = index.search(np.array([0.0, 2.0, 1.0], dtype=np.float32), 5)
    np.testing.assert_array_equal(ids, [[1, 2, 0, -1, -1]])
    np.testing.assert_array_equal(top[0, :3], [2.0, 1.0, 0.0])
    ids, top = index.search(np.empty((0, 3), dtype=np.float32), 4)
    assert ids.shape == (0, 4) and top.shape == (0, 4)


def test_exact_index_add_appends() -> None:
    rng = np.random.default_rng(3)
    first = rng.normal(size=(6, 4)).astype(np.float32)
    index = ExactIndex(first)
    new = rng.normal(size=(3, 4)).astype(np.float32)
    positions = index.add(new)
    np.testing.assert_array_equal(positions, [6, 7, 8])
    assert index.size == 9
    np.testing.assert_array_equal(index.vectors, np.vstack([first, new]))
    # a single vector may be given as 1-D
    np.testing.assert_array_equal(index.add(new[0]), [9])
    # the new rows are searchable: a query equal to a big new vector finds it first
    big = np.array([[10.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    (pos,) = index.add(big)
    ids, _ = index.search(big, 1)
    assert ids[0, 0] == pos


def test_exact_index_rejects_non_matrix() -> None:
    with pytest.raises(ValueError):
        ExactIndex(np.zeros(3, dtype=np.float32))
