"""How the embedding cache lies on disk: Parquet shards, and one memory-mapped index over them.

A shard, ``shard-<uuid>.parquet``, is one table of ``item_id`` (the item the text came from,
null when the caller did not say), ``text_hash`` (hex sha256 of the UTF-8 text) and ``vector``
(a fixed-size list of float32), with the encoder's full name in the schema's metadata. Shards
are written once, atomically, under fresh names, so any number of processes can add to a cache
at once, and any Parquet reader (pandas, Spark, DuckDB) can join them to a catalogue.

The index, ``index-<uuid>/``, is the read form: every shard's vectors in one ``vectors.npy``,
the sorted hashes in ``keys.npy`` and each hash's row in ``rows.npy``, memory-mapped, so a
process looks up a text with a binary search instead of holding every vector in a dict.
``index.json`` names the current index and is replaced atomically; ``shards.json`` inside an
index lists the shards it covers, and shards it does not cover are read on top. The index is
derived data: deleting it loses nothing, the next build makes it again from the shards.

Legacy ``shard-*.npz`` files (``keys`` S64, ``vectors``, ``encoder``) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warmstart._io import atomic_open, umask, write_json
from warmstart.text.core import progress_bar, want_progress

__all__ = [
    "KEY_DTYPE",
    "Index",
    "Shard",
    "build_index",
    "list_shards",
    "open_index",
    "read_shard",
    "remove_indexes",
    "shard_rows",
    "text_key",
    "write_shard",
]

logger = logging.getLogger("warmstart.text.cache")

KEY_DTYPE = "S64"  # hex digest: fixed width, and no trailing NUL bytes for numpy to strip
_ENCODER_META = b"warmstart.encoder"
_POINTER = "index.json"
_COPY_ROWS = 65_536  # rows copied at a time from an old index into a new one


def text_key(text: str) -> bytes:
    """The hash a text is stored under: hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")


def list_shards(directory: Path) -> list[Path]:
    """Every shard in `directory` (Parquet and legacy npz), in name order."""
    try:
        return sorted([*directory.glob("shard-*.parquet"), *directory.glob("shard-*.npz")])
    except OSError as exc:
        logger.warning("cannot list embedding cache %s: %s", directory, exc)
        return []


def write_shard(
    directory: Path,
    keys: np.ndarray,
    vectors: np.ndarray,
    encoder: str,
    item_ids: Sequence[str | None] | None = None,
) -> Path:
    """Write one new shard atomically under a fresh name; raises OSError if it cannot."""
    n, dim = vectors.shape
    if len(keys) != n or (item_ids is not None and len(item_ids) != n):
        raise ValueError(f"{len(keys)} keys and {n} vectors must pair up one to one")
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "item_id": pa.array(
                list(item_ids) if item_ids is not None else [None] * n, type=pa.string()
            ),
            "text_hash": pa.array(np.char.decode(np.asarray(keys, dtype=KEY_DTYPE), "ascii")),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    ).replace_schema_metadata({_ENCODER_META: encoder.encode("utf-8")})
    path = directory / f"shard-{uuid.uuid4().hex}.parquet"
    with atomic_open(path, "wb", encoding=None) as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def _shard_encoder(path: Path) -> str | None:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(_ENCODER_META)
    return raw.decode("utf-8") if raw is not None else None


def shard_rows(path: Path) -> int:
    """Rows in a shard, read from its footer (Parquet) or header (npz); 0 if unreadable."""
    try:
        if path.suffix == ".parquet":
            return int(pq.read_metadata(path).num_rows)
        with np.load(path, allow_pickle=False) as z:
            return len(z["keys"])
    except Exception:  # an unreadable shard is reported when it is read, and holds nothing
        return 0


@dataclass(frozen=True)
class Shard:
    """One shard's rows."""

    keys: np.ndarray  # S64 text hashes
    vectors: np.ndarray  # float32, (rows, dim)
    item_ids: list[str | None]  # None where the writer did not say (and in legacy shards)


def read_shard(path: Path, encoder: str, dim: int) -> Shard | None:
    """One shard, or None, with a warning, if it is unusable: unreadable, written by another
    encoder, or of the wrong shape."""
    try:
        if path.suffix == ".parquet":
            written_by = _shard_encoder(path)
            table = pq.read_table(path, columns=["item_id", "text_hash", "vector"])
            keys = np.asarray(table.column("text_hash").to_pylist(), dtype=KEY_DTYPE)
            column = table.column("vector").combine_chunks()
            if not pa.types.is_fixed_size_list(column.type):
                raise ValueError(f"column 'vector' has type {column.type}, not a fixed-size list")
            values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
            vectors = values.reshape(len(keys), column.type.list_size)
            item_ids = table.column("item_id").to_pylist()
        else:
            with np.load(path, allow_pickle=False) as z:
                keys = np.asarray(z["keys"])
                vectors = np.asarray(z["vectors"])
                written_by = str(z["encoder"]) if "encoder" in z.files else None
            item_ids = [None] * len(keys)
    except FileNotFoundError:
        return None  # removed by a concurrent compact(); its vectors live in the merged shard
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, pa.ArrowException) as exc:
        logger.warning("skipping unreadable embedding cache shard %s: %s", path, exc)
        return None
    problem = None
    if written_by is not None and written_by != encoder:
        problem = f"written by encoder {written_by!r}, not {encoder!r}"
    elif keys.dtype != np.dtype(KEY_DTYPE) or keys.ndim != 1:
        problem = f"keys have dtype {keys.dtype} and shape {keys.shape}"
    elif vectors.dtype != np.float32 or vectors.shape != (len(keys), dim):
        problem = f"vectors have dtype {vectors.dtype} and shape {vectors.shape}"
    if problem is not None:
        logger.warning("skipping embedding cache shard %s: %s", path, problem)
        return None
    return Shard(keys, vectors, item_ids)


@dataclass(frozen=True)
class Index:
    """One immutable generation of the index, memory-mapped read-only."""

    name: str  # its folder's name
    keys: np.ndarray  # sorted, distinct, S64
    rows: np.ndarray  # int64: the row of `vectors` holding each key's vector
    vectors: np.ndarray  # float32, (rows, dim); rows no key points to are unused
    shards: frozenset[str]  # names of the shards it covers

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Row in `vectors` of each key (S64), -1 where the index does not hold it."""
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(self.keys) == 0 or len(keys) == 0:
            return out
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[pos] == keys
        out[hit] = self.rows[pos[hit]]
        return out


def _pointer(directory: Path) -> str | None:
    """The folder name `index.json` holds, or None (with a warning if it is unreadable)."""
    try:
        with open(directory / _POINTER, encoding="utf-8") as fh:
            return str(json.load(fh)["index"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring embedding cache index %s: %s", directory / _POINTER, exc)
        return None


def _load(folder: Path, encoder: str, dim: int) -> Index:
    """Map one index folder; FileNotFoundError if it is gone, ValueError if it is not usable."""
    with open(folder / "shards.json", encoding="utf-8") as fh:
        meta = json.load(fh)
    keys = np.load(folder / "keys.npy", mmap_mode="r", allow_pickle=False)
    rows = np.load(folder / "rows.npy", mmap_mode="r", allow_pickle=False)
    vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
    ok = (
        meta.get("encoder") == encoder
        and keys.dtype == np.dtype(KEY_DTYPE)
        and rows.dtype == np.int64
        and rows.shape == keys.shape
        and vectors.dtype == np.float32
        and vectors.shape[1:] == (dim,)
        and (len(rows) == 0 or int(rows.max()) < len(vectors))
    )
    if not ok:
        raise ValueError(f"not an index of {encoder!r} vectors of dimension {dim}")
    return Index(folder.name, keys, rows, vectors, frozenset(meta["shards"]))


def open_index(
    directory: Path, encoder: str, dim: int, *, known: Index | None = None
) -> Index | None:
    """The index `index.json` names (`known` itself if it still is that one), or None, with
    a warning if it is unusable: then the shards are read instead."""
    for _ in range(2):  # a concurrent build may replace the named index as we open it
        name = _pointer(directory)
        if name is None:
            return None
        if known is not None and known.name == name:
            return known
        try:
            return _load(directory / name, encoder, dim)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring embedding cache index %s: %s", directory / name, exc)
            return None
    logger.warning("embedding cache index in %s kept changing while read", directory)
    return None


def build_index(
    directory: Path,
    encoder: str,
    dim: int,
    base: Index | None,
    shards: Sequence[Path],
    progress: bool | None = None,
) -> Index:
    """Write a new index holding `base` and `shards`, make it current, and remove older ones.

    Vectors are copied shard by shard into the mapped file, so memory holds one shard and
    the keys (64 bytes a vector), never all vectors. Raises OSError if it cannot write.
    """
    counts = [shard_rows(p) for p in shards]
    n_base = 0 if base is None else len(base)  # its live rows only: unused ones are not copied
    total = n_base + sum(counts)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"index-{uuid.uuid4().hex}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=directory))
    covered = set(base.shards) if base is not None else set()
    try:
        vectors = np.lib.format.open_memmap(
            tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(total, dim)
        )
        by_row = np.zeros(total, dtype=KEY_DTYPE)  # b"" marks a row no key will point to
        with progress_bar(total, want_progress(progress, total), "indexing") as bar:
            if base is not None:
                by_position = np.argsort(base.rows)  # the old rows in file order: reads run forward
                old_rows = np.asarray(base.rows)[by_position]
                for start in range(0, n_base, _COPY_ROWS):
                    end = min(start + _COPY_ROWS, n_base)
                    vectors[start:end] = base.vectors[old_rows[start:end]]
                by_row[:n_base] = np.asarray(base.keys)[by_position]
                bar.update(n_base)
            offset = n_base
            for path, count in zip(shards, counts, strict=True):
                shard = read_shard(path, encoder, dim)
                covered.add(path.name)  # an unusable shard stays unusable: never read it again
                if shard is not None and len(shard.keys) == count:
                    vectors[offset : offset + count] = shard.vectors
                    by_row[offset : offset + count] = shard.keys
                offset += count
                bar.update(count)
        vectors.flush()
        del vectors
        order = np.argsort(by_row, kind="stable")  # stable: the first copy of a key wins
        ordered = by_row[order]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        first &= ordered != b""
        np.save(tmp / "keys.npy", ordered[first], allow_pickle=False)
        np.save(tmp / "rows.npy", order[first].astype(np.int64), allow_pickle=False)
        write_json(tmp / "shards.json", {"encoder": encoder, "dim": dim, "shards": sorted(covered)})
        os.chmod(tmp, 0o777 & ~umask())
        os.replace(tmp, directory / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json(directory / _POINTER, {"index": name})
    # Older generations go; processes that mapped them keep their mappings. A build that
    # finished meanwhile may have become current: its folder stays too.
    remove_indexes(directory, keep={name, _pointer(directory) or name})
    return _load(directory / name, encoder, dim)


def remove_indexes(directory: Path, keep: Collection[str]) -> None:
    """Remove every index folder not named in `keep`."""
    for folder in directory.glob("index-*"):
        if folder.name not in keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
