"""VectorIndex: exact path against brute force, HNSW recall, upsert/remove, exclusion, padding."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from warmstart.index import VectorIndex

DIM = 32


def clustered(n: int, dim: int = DIM, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Gaussian clusters around unit-norm centres: structured like item embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(n_clusters, size=n)] + 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return x.astype(np.float32)


def brute_topk(
    keys: np.ndarray, data: np.ndarray, q: np.ndarray, k: int, exclude: set[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Full sort of every score: the definition the index must match."""
    scores = data @ q
    order = [i for i in np.lexsort((keys, -scores)) if exclude is None or keys[i] not in exclude]
    order = order[:k]
    return keys[order], scores[order]


def make_index(n: int, exact_below: int, seed: int = 0) -> tuple[VectorIndex, np.ndarray]:
    data = clustered(n, seed=seed)
    index = VectorIndex(DIM, exact_below=exact_below)
    # Sparse, shuffled keys so key != position.
    keys = np.random.default_rng(seed + 1).permutation(n).astype(np.int64) * 7 + 3
    index.add(keys, data)
    return index, keys


@pytest.fixture(scope="module")
def hnsw_2000() -> tuple[VectorIndex, np.ndarray]:
    index, keys = make_index(2000, exact_below=200)
    assert not index.is_exact
    return index, keys


def test_exact_matches_brute_force() -> None:
    index, keys = make_index(500, exact_below=10_000)
    assert index.is_exact and len(index) == 500
    data = index.vectors(keys)
    queries = clustered(25, seed=5)
    got_keys, got_scores = index.search(queries, 10)
    assert got_keys.shape == (25, 10) and got_keys.dtype == np.int64
    assert got_scores.shape == (25, 10) and got_scores.dtype == np.float32
    for i, q in enumerate(queries):
        ref_keys, ref_scores = brute_topk(keys, data, q, 10)
        np.testing.assert_array_equal(got_keys[i], ref_keys)
        np.testing.assert_allclose(got_scores[i], ref_scores, rtol=1e-5, atol=1e-5)


def test_exact_ties_break_by_key() -> None:
    index = VectorIndex(2, exact_below=100)
    index.add(np.array([9, 4, 7, 1]), np.ones((4, 2), dtype=np.float32))
    keys, _ = index.search(np.ones(2, dtype=np.float32), 3)
    np.testing.assert_array_equal(keys[0], [1, 4, 7])


def test_hnsw_recall(hnsw_2000: tuple[VectorIndex, np.ndarray]) -> None:
    index, _ = hnsw_2000
    queries = clustered(200, seed=11)
    approx, approx_scores = index.search(queries, 10)
    exact, _ = index.search(queries, 10, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95, recall
    # HNSW scores are true inner products, best first.
    for i in range(5):
        np.testing.assert_allclose(
            approx_scores[i], index.vectors(approx[i]) @ queries[i], rtol=1e-5, atol=1e-5
        )
        assert np.all(np.diff(approx_scores[i]) <= 0)


def test_nearest_keys_is_a_pool_around_the_query(hnsw_2000: tuple[VectorIndex, np.ndarray]) -> None:
    index, keys = hnsw_2000
    queries = clustered(50, seed=13)
    before = index.search(queries, 10)[0]
    for depth, least in ((None, 0.95), (40, 0.85)):  # a shallower search finds a little less
        found = 0
        for q in queries:
            pool = index.nearest_keys(q, 40, expansion=depth)
            assert pool.dtype == np.int64 and pool.size == 40
            assert set(pool.tolist()) <= set(keys.tolist())
            found += len(set(index.search(q, 10, exact=True)[0][0].tolist()) & set(pool.tolist()))
        assert found / (10 * len(queries)) >= least, depth
    # A shallow pool leaves the index's own search depth as it was.
    np.testing.assert_array_equal(index.search(queries, 10)[0], before)
    small, _ = make_index(300, exact_below=10_000)
    exact = small.search(queries[0], 25)[0][0]
    assert set(small.nearest_keys(queries[0], 25).tolist()) == set(exact.tolist())
    with pytest.raises(ValueError, match="count"):
        small.nearest_keys(queries[0], 0)
    with pytest.raises(ValueError, match="expansion"):
        small.nearest_keys(queries[0], 5, expansion=0)
    with pytest.raises(ValueError, match="query"):
        small.nearest_keys(queries[0][:5], 5)


def test_switches_to_hnsw_at_threshold_and_back() -> None:
    data = clustered(300)
    index = VectorIndex(DIM, exact_below=200)
    index.add(np.arange(199), data[:199])
    assert index.is_exact
    index.add(np.array([199]), data[199])
    assert not index.is_exact and len(index) == 200
    index.remove(np.arange(120))  # 80 left: below exact_below / 2
    assert index.is_exact and len(index) == 80
    keys, _ = index.search(data[150], 5)
    assert set(keys[0].tolist()) <= set(range(120, 200))


@pytest.mark.parametrize("exact_below", [10_000, 200])
def test_add_is_upsert(exact_below: int) -> None:
    index, keys = make_index(1000, exact_below=exact_below, seed=2)
    q = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    target = int(keys[17])
    before, _ = index.search(q, 5)
    assert target not in before[0]
    new = (10 * q / np.linalg.norm(q)).astype(np.float32)
    index.add(np.array([target]), new[None, :])
    assert len(index) == 1000
    np.testing.assert_array_equal(index.vectors(np.array([target]))[0], new)
    for exact in (False, True):
        after, scores = index.search(q, 5, exact=exact)
        assert after[0, 0] == target
        assert scores[0, 0] == pytest.approx(float(new @ q), rel=1e-5)


@pytest.mark.parametrize("exact_below", [10_000, 200])
def test_remove_makes_key_unreturnable(exact_below: int) -> None:
    index, _ = make_index(1000, exact_below=exact_below, seed=4)
    queries = clustered(50, seed=5)
    top, _ = index.search(queries, 3, exact=True)
    victims = np.unique(top)  # every query's current best three
    index.remove(np.concatenate([victims, [10**12]]))  # unknown key ignored
    assert len(index) == 1000 - victims.size and int(victims[0]) not in index
    for exact in (False, True):
        got, _ = index.search(queries, 20, exact=exact)
        assert not np.isin(got, victims).any()
        assert (got >= 0).all()
    with pytest.raises(KeyError, match=str(int(victims[0]))):
        index.vectors(victims[:1])
    # A removed key can be added again, and is found again.
    vec = 5 * queries[0] / np.linalg.norm(queries[0])
    index.add(victims[:1], vec[None, :])
    assert index.search(queries[0], 1)[0][0, 0] == victims[0]


@pytest.mark.parametrize("exact_below", [10_000, 200])
def test_exclude_still_returns_k(exact_below: int) -> None:
    index, _ = make_index(1000, exact_below=exact_below, seed=6)
    queries = clustered(8, seed=7)
    first, _ = index.search(queries, 30, exact=True)
    # Exclude the exact top 30 (and some unknown keys): forces HNSW to over-fetch beyond them.
    exclude = [set(row.tolist()) | {10**9, 5} for row in first]
    got, scores = index.search(queries, 10, exclude=exclude)
    assert (got >= 0).all() and np.isfinite(scores).all()
    for i in range(len(queries)):
        assert not set(got[i].tolist()) & exclude[i]
    ref, _ = index.search(queries, 10, exclude=exclude, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(got, ref, strict=True)])
    assert recall >= 0.9
    # Exclusions as lists are accepted too, and only the row they belong to is affected.
    got_list, _ = index.search(queries[:2], 10, exclude=[list(exclude[0]), []])
    np.testing.assert_array_equal(got_list[0], got[0])
    np.testing.assert_array_equal(got_list[1], index.search(queries[1], 10)[0][0])


@pytest.mark.parametrize("exact_below", [10_000, 0])
def test_padding_when_fewer_than_k(exact_below: int) -> None:
    index = VectorIndex(DIM, exact_below=exact_below)
    empty_keys, empty_scores = index.search(clustered(2), 4)
    assert (empty_keys == -1).all() and np.isneginf(empty_scores).all()
    data = clustered(5)
    index.add(np.arange(5), data)
    keys, scores = index.search(data[:2], 8, exclude=[{0, 1}, set()])
    assert keys.shape == (2, 8) and scores.shape == (2, 8)
    assert sorted(keys[0, :3].tolist()) == [2, 3, 4] and (keys[0, 3:] == -1).all()
    assert sorted(keys[1, :5].tolist()) == [0, 1, 2, 3, 4] and (keys[1, 5:] == -1).all()
    assert np.isfinite(scores[0, :3]).all() and np.isneginf(scores[0, 3:]).all()
    assert np.isneginf(scores[1, 5:]).all()


@pytest.mark.parametrize("exact_below", [10_000, 200])
def test_batch_equals_single(exact_below: int) -> None:
    index, keys = make_index(1000, exact_below=exact_below, seed=8)
    queries = clustered(20, seed=9)
    exclude = [set(keys[i : i + 3 * i].tolist()) for i in range(20)]
    for ex in (None, exclude):
        batch_keys, batch_scores = index.search(queries, 7, exclude=ex)
        for i, q in enumerate(queries):
            one_keys, one_scores = index.search(q, 7, exclude=None if ex is None else [ex[i]])
            np.testing.assert_array_equal(one_keys[0], batch_keys[i])
            np.testing.assert_array_equal(one_scores[0], batch_scores[i])
        again = index.search(queries, 7, exclude=ex)  # deterministic for a given state
        np.testing.assert_array_equal(again[0], batch_keys)


def test_bad_input_errors_name_the_problem() -> None:
    index = VectorIndex(4, exact_below=10)
    good = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"dim=4.*\(2, 3\)"):
        index.add(np.array([1, 2]), np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"n_keys=3"):
        index.add(np.array([1, 2, 3]), good)
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*key 2"):
        index.add(np.array([1, 2]), bad)
    with pytest.raises(ValueError, match=r"duplicate keys.*\[5\]"):
        index.add(np.array([5, 5]), good)
    with pytest.raises(ValueError, match=r"non-negative.*-1"):
        index.add(np.array([-1, 2]), good)
    with pytest.raises(ValueError, match="integers"):
        index.add(np.array([1.5, 2.0]), good)
    assert len(index) == 0  # nothing half-applied
    index.add(np.array([1, 2]), good)
    with pytest.raises(ValueError, match=r"dim=4"):
        index.search(np.ones((1, 5), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full(4, np.nan, dtype=np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(good, 0)
    with pytest.raises(ValueError, match="one collection per query"):
        index.search(good, 1, exclude=[set()])
    with pytest.raises(KeyError, match="99"):
        index.vectors(np.array([1, 99]))
    assert 1 in index and np.int64(2) in index and 3 not in index and "1" not in index


def test_concurrent_use_is_safe() -> None:
    index, keys = make_index(400, exact_below=200, seed=12)
    data = index.vectors(keys)
    errors: list[BaseException] = []

    def churn(offset: int) -> None:
        try:
            for step in range(20):
                new = np.arange(10) + 10_000 * (offset + 1) + 10 * step
                index.add(new, data[:10])
                index.search(data[:5], 10)
                index.remove(new[:5])
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 400 + 4 * 20 * 5


def test_hnsw_and_onnxruntime_load_together_in_either_order() -> None:
    """usearch loaded before onnxruntime crashed the process (a segfault when the test suite
    imported the ONNX tests after the ANN ones): the index must load them in a safe order."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    code = (
        "import numpy as np\n"
        "from warmstart.index.ann import VectorIndex\n"
        "ix = VectorIndex(4, exact_below=0)\n"
        "ix.add(np.arange(3), np.eye(3, 4, dtype=np.float32))\n"
        "import onnxruntime\n"
        "print(ix.search(np.eye(1, 4, dtype=np.float32), 1)[0][0][0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0"


def test_saved_graph_is_loaded_for_the_same_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clustered(1500, seed=3)
    keys = np.arange(1500, dtype=np.int64) * 3
    loads: list[bool] = []
    real = VectorIndex._load_graph

    def spy(self: VectorIndex, index: Any, path: Path) -> bool:
        loads.append(real(self, index, path))
        return loads[-1]

    monkeypatch.setattr(VectorIndex, "_load_graph", spy)
    first = VectorIndex(DIM, exact_below=100, graph_dir=tmp_path)
    first.add(keys, data)
    saved = list(tmp_path.glob("*.usearch"))
    assert len(saved) == 1 and loads == [False]
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed

    second = VectorIndex(DIM, exact_below=100, graph_dir=tmp_path)
    second.add(keys, data)
    assert loads == [False, True]
    queries = clustered(50, seed=4)
    a_keys, a_scores = first.search(queries, 10)
    b_keys, b_scores = second.search(queries, 10)
    np.testing.assert_array_equal(a_keys, b_keys)
    np.testing.assert_array_equal(a_scores, b_scores)
    # The loaded graph stays mutable: an upsert and a removal take effect.
    second.add(np.array([1]), data[0] * 1.01)  # within the radius: no rebuild
    second.remove(np.array([0]))
    top, _ = second.search(data[0], 10)
    exact, _ = second.search(data[0], 10, exact=True)
    assert 0 not in top[0] and 1 in top[0]
    np.testing.assert_array_equal(top, exact)

    # Other content (one vector changed) is another graph, built and saved beside the first.
    changed = data.copy()
    changed[7] += 0.5
    VectorIndex(DIM, exact_below=100, graph_dir=tmp_path).add(keys, changed)
    assert loads[-1] is False and len(list(tmp_path.glob("*.usearch"))) == 2


def test_damaged_graph_file_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = clustered(600, seed=5)
    keys = np.arange(600, dtype=np.int64)
    VectorIndex(DIM, exact_below=100, graph_dir=tmp_path).add(keys, data)
    (path,) = tmp_path.glob("*.usearch")
    path.write_bytes(path.read_bytes()[:100])
    index = VectorIndex(DIM, exact_below=100, graph_dir=tmp_path)
    with caplog.at_level("WARNING", logger="warmstart.index.ann"):
        index.add(keys, data)
    assert "rebuilding the HNSW graph" in caplog.text
    found, _ = index.search(data[:20], 10)
    exact, _ = index.search(data[:20], 10, exact=True)
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found, exact, strict=True)]) >= 0.95
    assert path.stat().st_size > 100  # and saved whole


def test_only_the_newest_graphs_are_kept(tmp_path: Path) -> None:
    data = clustered(300, seed=6)
    for j in range(8):
        VectorIndex(DIM, exact_below=100, graph_dir=tmp_path).add(
            np.arange(300, dtype=np.int64), data + 0.01 * j
        )
    assert len(list(tmp_path.glob("*.usearch"))) == 6
