"""`warmstart encode`: the cache it fills is the one fit reads, reruns do only what is left, and
the Ray engine (a local Ray, or the cluster $WARMSTART_TEST_RAY_ADDRESS names) gives the local
engine's vectors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.cli.test_cli import _cli
from warmstart.data import read_item_texts
from warmstart.errors import ConfigError, DataError
from warmstart.scale import EncodeReport, encode_items, encode_texts
from warmstart.scale import encode as encode_module
from warmstart.text import CachedEncoder, HashingEncoder, MissingDependencyError, get_encoder
from warmstart.text.store import text_key

WORDS = ["red", "blue", "green", "fast", "slow", "quiet", "loud", "small", "metal", "wood"]


def _texts(n: int, seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    texts: list[str | None] = [f"{' '.join(rng.choice(WORDS, 6))} item {i}" for i in range(n)]
    texts[1] = None  # no text
    texts[2] = "   "  # blank: no text either
    texts[4] = texts[3]  # a repeat
    return texts


class CountingEncoder:
    """The hashing encoder, counting the texts it is asked for; fails from call `fail_at` on."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.inner = HashingEncoder()
        self.name, self.dim = self.inner.name, self.inner.dim
        self.calls = 0
        self.texts = 0
        self.fail_at = fail_at

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt("stopped")
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size=batch_size)


def test_encode_fills_the_cache_a_model_reads_and_a_rerun_encodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(300)
    report = encode_texts(texts, "hashing", tmp_path, block_size=100, progress=False)
    assert (report.texts, report.empty, report.distinct) == (300, 2, 297)
    assert (report.cached, report.encoded, report.blocks) == (0, 297, 3)
    assert len(list(Path(report.directory).glob("shard-*.parquet"))) == 3

    counting = CountingEncoder()
    monkeypatch.setattr(encode_module, "get_encoder", lambda name: counting)
    again = encode_texts(texts, "hashing", tmp_path, block_size=100, progress=False)
    assert (again.cached, again.encoded, again.blocks, counting.calls) == (297, 0, 0, 0)

    # What a fit does with the same texts: every one a hit, and the encoder's own vectors.
    cache = CachedEncoder(counting, tmp_path)
    vectors = cache.encode([t or "" for t in texts])
    assert (cache.misses, counting.calls) == (0, 0)
    np.testing.assert_array_equal(vectors, HashingEncoder().encode([t or "" for t in texts]))


def test_a_stopped_run_keeps_its_finished_blocks_and_the_next_does_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(500)
    failing = CountingEncoder(fail_at=3)
    monkeypatch.setattr(encode_module, "get_encoder", lambda name: failing)
    with pytest.raises(KeyboardInterrupt):
        encode_texts(texts, "hashing", tmp_path, block_size=100, progress=False)
    assert failing.texts == 200  # two blocks done and written before the stop

    counting = CountingEncoder()
    monkeypatch.setattr(encode_module, "get_encoder", lambda name: counting)
    rest = encode_texts(texts, "hashing", tmp_path, block_size=100, progress=False)
    assert (rest.cached, rest.encoded, counting.texts) == (200, 297, 297)  # 497 distinct
    assert CachedEncoder(HashingEncoder(), tmp_path).missing([t or "" for t in texts]) == []


def test_cache_add_refuses_vectors_that_do_not_fit(tmp_path: Path) -> None:
    cache = CachedEncoder(HashingEncoder(), tmp_path)
    with pytest.raises(ValueError, match=r"vectors of shape \(2, 256\)"):
        cache.add(["a", "b"], np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        cache.add(["a", " "], np.zeros((2, 256), dtype=np.float32))
    assert not list(cache.directory.glob("shard-*.parquet"))


def test_read_item_texts_renders_like_a_dataset_and_names_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    pd.DataFrame(
        {"sku": ["a", "b", "c"], "title": ["Lamp", None, "Desk"], "brand": ["X", "Y", None]}
    ).to_csv(path, index=False)
    ids, texts = read_item_texts(path, item_col="sku")
    assert list(ids) == ["a", "b", "c"] and texts == ("Lamp. X", "Y", "Desk")
    assert read_item_texts(path, item_col="sku", item_text="{title}")[1] == ("Lamp", None, "Desk")
    with pytest.raises(DataError, match=r"items.csv.*missing column 'item_id'"):
        read_item_texts(path)
    with pytest.raises(DataError, match=r"items.csv.*colour"):
        read_item_texts(path, item_col="sku", item_text="{colour}")
    pd.DataFrame({"sku": ["a", "b", "a"], "title": ["x", "y", "z"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"items.csv, line 4"):
        read_item_texts(path, item_col="sku")


def test_encode_command_writes_the_cache_and_reports_it(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"id": i, "name": f"thing {i % 7}"}) + "\n" for i in range(20))
    )
    out = tmp_path / "cache"
    args = ["encode", "--items", str(items), "--item-col", "id", "--encoder", "hashing"]
    res = _cli(*args, "--output", str(out), "--format", "json", cache=tmp_path / "unused")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["texts"], report["distinct"], report["encoded"]) == (20, 7, 7)
    assert Path(report["directory"]).parent == out
    assert CachedEncoder(HashingEncoder(), out).missing([f"thing {i}" for i in range(7)]) == []

    res = _cli(*args, "--dataset", "ml-100k", cache=out)
    assert res.returncode == 2 and "either --items FILE or --dataset NAME" in res.stderr
    res = _cli(*args, "--engine", "spark", cache=out)
    assert res.returncode == 2 and "unknown engine 'spark'" in res.stderr


def _catalogue(path: Path, n: int, seed: int = 0) -> pd.DataFrame:
    texts = _texts(n, seed)
    frame = pd.DataFrame({"sku": [f"sku-{i}" for i in range(n)], "title": texts, "price": 1.5})
    frame.to_parquet(path)
    return frame.assign(title=[t or "" for t in texts])  # what the cache is asked for


def _stored(directory: str) -> dict[str, str | None]:
    """text hash -> item id, over every shard of a cache folder."""
    rows = [
        r for p in Path(directory).glob("shard-*.parquet") for r in pq.read_table(p).to_pylist()
    ]
    return {r["text_hash"]: r["item_id"] for r in rows}


def test_encode_items_stores_each_texts_item_and_indexes_the_cache(tmp_path: Path) -> None:
    frame = _catalogue(tmp_path / "items.parquet", 120)
    report = encode_items(
        tmp_path / "items.parquet", "hashing", tmp_path, item_col="sku", block_size=50
    )
    assert (report.encoded, report.blocks, report.indexed) == (117, 3, 117)
    stored = _stored(report.directory)
    assert stored[text_key(frame.title[4]).decode()] == "sku-3", (
        "a shared text keeps its first item"
    )
    assert stored[text_key(frame.title[9]).decode()] == "sku-9"
    reader = CachedEncoder(HashingEncoder(), tmp_path)
    assert reader.missing(list(frame.title)) == [] and reader.in_memory == 0


def test_without_ray_the_ray_engine_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'warmstart\[ray\]'"):
        encode_texts(["a text"], "hashing", tmp_path, engine="ray", progress=False)


# ---- on Ray (the `ray_address` fixture: tests/scale/conftest.py) -----------------------------
def test_ray_engine_gives_the_local_engines_vectors(
    tmp_path: Path, ray_address: str | None
) -> None:
    texts = _texts(240, seed=1)
    local = encode_texts(texts, "default", tmp_path / "local", block_size=64, progress=False)
    on_ray = encode_texts(
        texts,
        "default",
        tmp_path / "ray",
        engine="ray",
        address=ray_address,
        actors=2,
        block_size=64,
        progress=False,
    )
    assert (on_ray.engine, on_ray.encoded, on_ray.blocks) == ("ray", local.encoded, 4)
    rows = [t or "" for t in texts]
    encoder = get_encoder("default")
    a = CachedEncoder(encoder, tmp_path / "local").encode(rows)
    b = CachedEncoder(encoder, tmp_path / "ray").encode(rows)
    assert np.abs(a - b).max() <= 1e-6
    assert not np.any(a[1]) and np.allclose(np.linalg.norm(a[5:], axis=1), 1.0, atol=1e-5)


def test_ray_engine_refuses_more_actor_cpus_than_the_cluster_has(
    tmp_path: Path, ray_address: str | None
) -> None:
    with pytest.raises(ConfigError, match=r"3 actors x 1 CPUs need 3 CPUs; the Ray cluster has 2"):
        encode_texts(["a", "b"], "hashing", tmp_path, engine="ray", address=ray_address, actors=3)
    assert CachedEncoder(HashingEncoder(), tmp_path).missing(["a", "b"]) == ["a", "b"]


def test_ray_reads_a_parquet_catalogue_in_blocks_and_skips_what_is_cached(
    tmp_path: Path, ray_address: str | None
) -> None:
    path = tmp_path / "items.parquet"
    frame = _catalogue(path, 300, seed=3)
    ray_cache, local_cache = tmp_path / "ray", tmp_path / "local"

    def on_ray() -> EncodeReport:
        return encode_items(
            path,
            "hashing",
            ray_cache,
            item_col="sku",
            engine="ray",
            address=ray_address,
            block_size=64,
        )

    report = on_ray()
    local = encode_items(path, "hashing", local_cache, item_col="sku", block_size=64)
    assert (report.engine, report.texts, report.encoded, report.empty) == ("ray", 300, 297, None)
    assert report.indexed == local.indexed == 297
    assert _stored(report.directory) == _stored(local.directory), "same texts, same items"
    rows = list(frame.title)
    a = CachedEncoder(HashingEncoder(), local_cache).encode(rows)
    np.testing.assert_array_equal(CachedEncoder(HashingEncoder(), ray_cache).encode(rows), a)

    again = on_ray()
    assert (again.encoded, again.blocks) == (0, 0), "the blocks skip what the cache holds"
    grown = pd.concat([frame, _catalogue(tmp_path / "more.parquet", 340, seed=4)[300:]])
    grown.to_parquet(path)
    more = on_ray()
    assert more.encoded == 40 and more.indexed == 337


def test_ray_file_reading_needs_a_cpu_the_actors_leave_free(
    tmp_path: Path, ray_address: str | None
) -> None:
    _catalogue(tmp_path / "items.parquet", 10)
    with pytest.raises(ConfigError, match=r"Ray issue 44687"):
        encode_items(
            tmp_path / "items.parquet",
            "hashing",
            tmp_path,
            item_col="sku",
            engine="ray",
            address=ray_address,
            actors=2,
        )


def test_a_ray_address_where_nothing_listens_fails_at_once(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match=r"nothing answers at 127\.0\.0\.1:1 "):
        encode_texts(["a"], "hashing", tmp_path, engine="ray", address="127.0.0.1:1")


def test_ray_engine_gives_the_local_int8_onnx_vectors(
    tmp_path: Path, ray_address: str | None
) -> None:
    from warmstart.finetune import FineTuneConfig, TextTower
    from warmstart.finetune.export import export_onnx

    folder = export_onnx(TextTower(FineTuneConfig()), tmp_path / "onnx")
    name = f"onnx:{folder}"  # int8: the actors open the same exported folder
    texts = _texts(150, seed=2)
    encode_texts(texts, name, tmp_path / "local", block_size=40, progress=False)
    on_ray = encode_texts(
        texts, name, tmp_path / "ray", engine="ray", address=ray_address, actors=2, block_size=40
    )
    assert (on_ray.blocks, on_ray.encoded) == (4, 147)
    rows = [t or "" for t in texts]
    encoder = get_encoder(name)
    assert "int8" in encoder.name
    a = CachedEncoder(encoder, tmp_path / "local").encode(rows)
    b = CachedEncoder(encoder, tmp_path / "ray").encode(rows)
    assert np.abs(a - b).max() <= 1e-6
