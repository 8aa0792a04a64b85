"""Metrics against hand-computed values, brute-force references and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from warmstart import metrics
from warmstart.metrics import (
    AUC,
    MAE,
    MAP,
    MRR,
    NDCG,
    RMSE,
    CappedRecall,
    Coverage,
    HitRate,
    Precision,
    Recall,
    bootstrap_ci,
    hit_matrix,
    paired_test,
    ranking_metrics,
)

LOG2_3 = math.log2(3)


def small_case() -> tuple[np.ndarray, sp.csr_matrix]:
    """Three users, six items.

    user 0: relevant {1, 3, 5}, reco [1, 2, 3, -1]  -> hits at positions 1 and 3
    user 1: relevant {0} plus an explicit zero at item 4, reco [4, 0, -1, -1]  -> hit at position 2
    user 2: nothing relevant, reco [0, 1, 2, 3]
    """
    data = np.array([1.0, 1.0, 2.0, 5.0, 0.0], dtype=np.float32)
    indices = np.array([1, 3, 5, 0, 4])
    indptr = np.array([0, 3, 5, 5])
    truth = sp.csr_matrix((data, indices, indptr), shape=(3, 6))
    reco = np.array([[1, 2, 3, -1], [4, 0, -1, -1], [0, 1, 2, 3]])
    return reco, truth


# Hand-computed from the definitions; users are (0, 1, 2).
IDCG3 = 1 + 1 / LOG2_3 + 1 / 2  # three relevant items at the top
EXPECTED_K3 = {
    Recall: [2 / 3, 1 / 1, 0],
    Precision: [2 / 3, 1 / 3, 0],
    NDCG: [(1 + 1 / 2) / IDCG3, (1 / LOG2_3) / 1, 0],
    HitRate: [1, 1, 0],
    MRR: [1, 1 / 2, 0],
    MAP: [(1 / 1 + 2 / 3) / 3, (1 / 2) / 1, 0],
}
# K > k: only the first two columns count.
EXPECTED_K2 = {
    Recall: [1 / 3, 1 / 1, 0],
    Precision: [1 / 2, 1 / 2, 0],
    NDCG: [1 / (1 + 1 / LOG2_3), (1 / LOG2_3) / 1, 0],
    HitRate: [1, 1, 0],
    MRR: [1, 1 / 2, 0],
    MAP: [(1 / 1) / 2, (1 / 2) / 1, 0],
}
# K = 4 < k = 6: the missing columns are misses, precision still divides by k, the ideal DCG
# still uses min(n, k) = 3 items.
EXPECTED_K6 = {
    Recall: [2 / 3, 1 / 1, 0],
    Precision: [2 / 6, 1 / 6, 0],
    NDCG: [(1 + 1 / 2) / IDCG3, (1 / LOG2_3) / 1, 0],
    HitRate: [1, 1, 0],
    MRR: [1, 1 / 2, 0],
    MAP: [(1 / 1 + 2 / 3) / 3, (1 / 2) / 1, 0],
}


@pytest.mark.parametrize(("k", "expected"), [(3, EXPECTED_K3), (2, EXPECTED_K2), (6, EXPECTED_K6)])
def test_ranking_metrics_by_hand(k: int, expected: dict[type, list[float]]) -> None:
    reco, truth = small_case()
    for cls, values in expected.items():
        metric = cls(k)
        per_user = metric.calc_per_user(reco, truth)
        assert per_user.dtype == np.float64
        np.testing.assert_allclose(per_user, values, err_msg=metric.name)
        assert metric.calc(reco, truth) == pytest.approx(np.mean(values))


def test_hit_matrix_padding_and_width() -> None:
    reco, truth = small_case()
    expected = [
        [True, False, True, False, False, False],
        [False, True, False, False, False, False],
        [False, False, False, False, False, False],
    ]
    np.testing.assert_array_equal(hit_matrix(reco, truth, 6), expected)
    np.testing.assert_array_equal(hit_matrix(reco, truth, 2), np.array(expected)[:, :2])


def test_repeated_id_hits_once() -> None:
    truth = sp.csr_matrix(np.array([[0, 1, 1]]))
    reco = np.array([[1, 1, 2]])
    np.testing.assert_array_equal(hit_matrix(reco, truth, 3), [[True, False, True]])
    assert Recall(3).calc(reco, truth) == 1.0


def test_empty_truth_and_no_users() -> None:
    truth = sp.csr_matrix((2, 5))
    reco = np.array([[0, 1], [-1, -1]])
    for metric in ranking_metrics([1, 5]):
        np.testing.assert_array_equal(metric.calc_per_user(reco, truth), [0.0, 0.0])
    empty = np.zeros((0, 3), dtype=np.int64)
    assert math.isnan(NDCG(3).calc(empty, sp.csr_matrix((0, 5))))


def test_bad_inputs() -> None:
    reco, truth = small_case()
    for cls in (Recall, Precision, NDCG, HitRate, MRR, MAP, Coverage):
        with pytest.raises(ValueError):
            cls(0)
    with pytest.raises(ValueError):
        Recall(2).calc(reco[:2], truth)
    with pytest.raises(ValueError):
        Recall(2).calc(np.array([[6, 0]] * 3), truth)


def test_ranking_metrics_order_and_names() -> None:
    names = [m.name for m in ranking_metrics([5, 20])]
    assert names == [
        "recall@5",
        "precision@5",
        "ndcg@5",
        "hitrate@5",
        "mrr@5",
        "map@5",
        "recall@20",
        "precision@20",
        "ndcg@20",
        "hitrate@20",
        "mrr@20",
        "map@20",
    ]


def random_case(seed: int = 0) -> tuple[np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 60, 40, 12
    truth = sp.csr_matrix(rng.random((n_users, n_items)) < 0.15)
    reco = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    reco[rng.random(reco.shape) < 0.1] = -1
    return reco, truth


def test_against_brute_force() -> None:
    reco, truth = random_case()
    dense = truth.toarray()
    k = 8
    ndcg, ap = [], []
    for row, relevant in zip(reco, dense, strict=True):
        rel = [i >= 0 and bool(relevant[i]) for i in row[:k]]
        n = int(relevant.sum())
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(n, k)))
        ndcg.append(dcg / idcg if idcg else 0.0)
        precisions = [sum(rel[: i + 1]) / (i + 1) for i, r in enumerate(rel) if r]
        ap.append(sum(precisions) / min(n, k) if n else 0.0)
    np.testing.assert_allclose(NDCG(k).calc_per_user(reco, truth), ndcg)
    np.testing.assert_allclose(MAP(k).calc_per_user(reco, truth), ap)


def test_recall_monotone_and_ndcg_bounded() -> None:
    reco, truth = random_case(1)
    recalls = np.stack([Recall(k).calc_per_user(reco, truth) for k in range(1, 15)])
    assert np.all(np.diff(recalls, axis=0) >= 0)
    for k in (1, 5, 12, 20):
        values = NDCG(k).calc_per_user(reco, truth)
        assert np.all((values >= 0) & (values <= 1 + 1e-12))


def test_auc_by_hand() -> None:
    inf = np.inf
    scores = np.array(
        [
            # item 0 beats all three negatives (3 wins), item 3 is relevant but -inf (0 wins)
            [0.9, 0.1, 0.5, -inf, 0.3],
            # item 0 ties one negative (0.5) and beats the other (1): 1.5 / 2
            [0.5, 0.5, 0.2, -inf, -inf],
            [0.4, 0.4, 0.4, 0.4, -inf],  # all equal
            [0.9, 0.8, 0.1, 0.0, -inf],  # perfect ordering
            [0.1, 0.2, 0.3, 0.4, 0.5],  # no positives
            [0.1, -inf, -inf, -inf, -inf],  # no negatives
        ]
    )
    truth = sp.csr_matrix(
        np.array(
            [
                [1, 0, 0, 1, 0],
                [1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [0, 0, 0, 0, 0],
                [1, 0, 0, 0, 0],
            ]
        )
    )
    values = AUC().calc_per_user(scores, truth)
    np.testing.assert_allclose(values[:4], [3 / 6, 1.5 / 2, 0.5, 1.0])
    assert np.isnan(values[4:]).all()
    assert AUC().calc(scores, truth) == pytest.approx(np.mean([0.5, 0.75, 0.5, 1.0]))
    assert AUC().name == "auc"


def test_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 25, 150
    scores = np.round(rng.standard_normal((n_users, n_items)), 1)  # rounding makes ties
    relevant = rng.random((n_users, n_items)) < 0.1
    scores[(rng.random((n_users, n_items)) < 0.2) & ~relevant] = -np.inf
    scores[(rng.random((n_users, n_items)) < 0.05) & relevant] = -np.inf
    values = AUC().calc_per_user(scores, sp.csr_matrix(relevant))
    for u in range(n_users):
        candidate = np.isfinite(scores[u]) | relevant[u]
        # sklearn cannot take -inf; a relevant -inf item ranks below every negative.
        finite = np.where(np.isfinite(scores[u]), scores[u], -1e9)[candidate]
        assert values[u] == pytest.approx(roc_auc_score(relevant[u][candidate], finite))


def test_auc_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        AUC().calc_per_user(np.zeros((2, 3)), sp.csr_matrix((2, 4)))


def test_coverage() -> None:
    reco = np.array([[0, 1, -1], [1, 2, 3]])
    assert Coverage(2).calc(reco, 10) == pytest.approx(3 / 10)
    assert Coverage(3).calc(reco, 10) == pytest.approx(4 / 10)
    assert Coverage(10).name == "coverage@10"
    with pytest.raises(ValueError):
        Coverage(2).calc(reco, 0)


def test_rmse_mae() -> None:
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    actual = np.array([1.0, 4.0, 3.0, 1.0])
    users = np.array([7, 2, 7, 2])  # errors: user 2 -> (-2, 3), user 7 -> (0, 0)
    np.testing.assert_allclose(RMSE().calc_per_user(pred, actual, users), [math.sqrt(6.5), 0.0])
    np.testing.assert_allclose(MAE().calc_per_user(pred, actual, users), [2.5, 0.0])
    assert RMSE().calc(pred, actual) == pytest.approx(math.sqrt(13 / 4))
    assert MAE().calc(pred, actual) == pytest.approx(5 / 4)
    assert (RMSE().name, MAE().name) == ("rmse", "mae")
    with pytest.raises(ValueError):
        RMSE().calc(pred, actual[:3])


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(0)
    many = rng.normal(0.3, 0.1, size=2000)
    few = many[:100]
    low, high = bootstrap_ci(few)
    assert low < few.mean() < high
    low_many, high_many = bootstrap_ci(many)
    assert low_many < many.mean() < high_many
    assert high_many - low_many < high - low
    with_nan = np.concatenate([few, [np.nan, np.nan]])
    assert bootstrap_ci(with_nan) == (low, high)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([np.nan])))


def test_bootstrap_chunking_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(1).random(37)
    whole = bootstrap_ci(values, n_resamples=300, seed=4)
    monkeypatch.setattr(metrics, "_BLOCK", 100)
    assert bootstrap_ci(values, n_resamples=300, seed=4) == whole


def test_paired_test() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(50)
    assert paired_test(a, a.copy()) == 1.0
    assert paired_test(a, a + 0.5 + 0.01 * rng.standard_normal(50)) < 1e-6
    b = a.copy()
    b[:3] = np.nan
    assert paired_test(a, b) == 1.0
    with pytest.raises(ValueError):
        paired_test(a, a[:10])


def test_capped_recall_reaches_one_with_more_relevant_than_k() -> None:
    """Two relevant, k=1: Recall caps at 1/2, CappedRecall reaches 1; one relevant: they agree."""
    reco = np.array([[0], [2], [3]])
    truth = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    np.testing.assert_array_equal(CappedRecall(1).calc_per_user(reco, truth), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(Recall(1).calc_per_user(reco, truth), [0.5, 1.0, 0.0])
    assert CappedRecall(1).name == "cappedrecall@1"
