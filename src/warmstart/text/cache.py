"""Embedding caches: on disk, so a re-run encodes only texts it has never seen, and in memory.

`CachedEncoder` keeps its vectors under ``cache_dir / <safe encoder name>``, in the layout
`warmstart.text.store` describes: Parquet shards written once and atomically (so concurrent
processes never write the same file and readers never see half a shard), and one
memory-mapped index over them, so a large cache is looked up, not loaded. Unreadable shards are
skipped with a warning: a cache may lose entries, never crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from warmstart.text.core import TextEncoder, check_texts, has_text
from warmstart.text.encoders import get_encoder
from warmstart.text.store import (
    KEY_DTYPE,
    Index,
    build_index,
    list_shards,
    open_index,
    read_shard,
    remove_indexes,
    shard_rows,
    text_key,
    write_shard,
)

__all__ = [
    "CachedEncoder",
    "FrozenEncoder",
    "MemoryCachedEncoder",
    "default_cache_dir",
    "encoder_from_name",
]

logger = logging.getLogger(__name__)

INDEX_AFTER = 100_000  # vectors outside the index (in memory) that make a process rebuild it


def default_cache_dir() -> Path:
    """Where embeddings are cached: $WARMSTART_CACHE_DIR, else the XDG user cache directory."""
    env = os.environ.get("WARMSTART_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "warmstart" / "embeddings"


def _safe_dirname(name: str) -> str:
    """Filesystem-safe and collision-free: sanitised name plus a short hash of the exact name."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("._") or "encoder"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:80]}-{digest}"


_text_key = text_key


class CachedEncoder:
    """Wraps a `TextEncoder` with a persistent cache; same `name`, `dim` and vectors.

    Vectors of shards the index covers stay on disk, memory-mapped; those of newer shards are
    held in memory until there are `index_after` of them, when the process that meets them
    builds a new index (`index()` builds one at once). `hits` and `misses` are cumulative:
    `misses` counts distinct texts sent to the wrapped encoder, `hits` the other non-empty
    inputs (served from cache or a duplicate in the same call). Empty texts count as neither:
    they are zero rows and never cached.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        cache_dir: str | Path | None = None,
        *,
        index_after: int = INDEX_AFTER,
    ) -> None:
        self.encoder = encoder
        self.name: str = encoder.name
        self.dim: int = encoder.dim
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.directory: Path = root / _safe_dirname(self.name)
        self.index_after = index_after
        self.hits = 0
        self.misses = 0
        self._index: Index | None = None
        self._recent: dict[bytes, np.ndarray] = {}  # vectors the index does not hold
        self._loaded: set[str] = set()  # shards in the index or in `_recent`
        self._in_recent: set[str] = set()  # shards read (or written) into `_recent`

    def __len__(self) -> int:
        """Vectors this process can look up (as of its last look at the folder)."""
        return (0 if self._index is None else len(self._index)) + len(self._recent)

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, directory={str(self.directory)!r})"

    @property
    def in_memory(self) -> int:
        """Vectors held in this process's memory rather than mapped from the index."""
        return len(self._recent)

    def _use_index(self, index: Index) -> None:
        self._index = index
        self._in_recent -= index.shards
        self._loaded = set(index.shards) | self._in_recent  # what it lacks is read again
        if self._recent:
            keys = list(self._recent)
            held = index.find(np.array(keys, dtype=KEY_DTYPE)) >= 0
            for key in np.array(keys, dtype=object)[held]:
                del self._recent[key]

    def _refresh(self) -> None:
        """Take up a newer index and the shards it does not cover, including ones other
        processes wrote since the last call; build an index once too many lie outside it."""
        current = open_index(self.directory, self.name, self.dim, known=self._index)
        if current is not None and current is not self._index:
            self._use_index(current)
        shards = list_shards(self.directory)
        new = [p for p in shards if p.name not in self._loaded]
        if not new:
            return
        outside = len(self._recent) + sum(shard_rows(p) for p in new)
        if outside >= self.index_after and self._build(shards):
            return
        for path in new:
            self._loaded.add(path.name)
            self._in_recent.add(path.name)
            shard = read_shard(path, self.name, self.dim)
            if shard is not None:
                for key, vec in zip(shard.keys.tolist(), shard.vectors, strict=True):
                    self._recent.setdefault(key, vec)

    def _build(self, shards: list[Path], progress: bool | None = False) -> bool:
        """Index every shard the current index does not cover; False (warned) if it cannot."""
        covered = self._index.shards if self._index is not None else frozenset()
        todo = [p for p in shards if p.name not in covered]
        try:
            index = build_index(self.directory, self.name, self.dim, self._index, todo, progress)
        except OSError as exc:
            logger.warning("cannot index embedding cache %s: %s", self.directory, exc)
            return False
        self._use_index(index)
        return True

    def index(self, progress: bool | None = None) -> int:
        """Put every shard's vectors into one memory-mapped index now, so this and later
        processes look them up without loading them; returns the vectors it holds.
        Raises OSError if it cannot write."""
        self._refresh()
        shards = list_shards(self.directory)
        if self._index is None or any(p.name not in self._index.shards for p in shards):
            covered = self._index.shards if self._index is not None else frozenset()
            todo = [p for p in shards if p.name not in covered]
            self._use_index(
                build_index(self.directory, self.name, self.dim, self._index, todo, progress)
            )
        assert self._index is not None  # built just above when there was none
        return len(self._index)

    def _lookup(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(found, vectors) for distinct keys; rows not found are zero."""
        found = np.zeros(len(keys), dtype=bool)
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        if self._index is not None and len(self._index) and keys:
            rows = self._index.find(np.array(keys, dtype=KEY_DTYPE))
            found = rows >= 0
            if found.any():
                out[found] = self._index.vectors[rows[found]]
        if self._recent:
            for i in np.flatnonzero(~found).tolist():
                vec = self._recent.get(keys[i])
                if vec is not None:
                    out[i] = vec
                    found[i] = True
        return found, out

    def known_keys(self) -> np.ndarray:
        """Sorted hashes (S64) of every text the cache holds now: what a reader elsewhere
        needs to skip them."""
        self._refresh()
        held = np.array(list(self._recent), dtype=KEY_DTYPE)
        if self._index is not None:
            held = np.concatenate([np.asarray(self._index.keys), held])
        return np.unique(held)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct non-empty texts with no vector in the cache yet (shards other processes
        wrote included), in the order first met: what an `encode` run still has to do."""
        self._refresh()
        todo: dict[bytes, str] = {}
        for text in check_texts(texts):
            if has_text(text):
                todo.setdefault(_text_key(text), text)
        keys = list(todo)
        found, _ = self._lookup(keys)
        return [todo[k] for k, hit in zip(keys, found.tolist(), strict=True) if not hit]

    def add(
        self,
        texts: Sequence[str],
        vectors: np.ndarray,
        item_ids: Sequence[str | None] | None = None,
    ) -> Path:
        """Store vectors of these texts that an encoder of the same name computed elsewhere
        (another process, a Ray actor), as one new shard, with the item each came from if
        given. The vectors are not kept in memory: a later lookup reads them back (or indexes
        them). Raises OSError if it cannot write."""
        checked = check_texts(texts)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.shape != (len(checked), self.dim):
            raise ValueError(
                f"{len(checked)} texts need vectors of shape {(len(checked), self.dim)}, "
                f"got {vecs.shape}"
            )
        empty = [i for i, t in enumerate(checked) if not has_text(t)]
        if empty:
            raise ValueError(f"texts[{empty[0]}] is empty: empty texts are zero rows, not cached")
        keys = np.array([_text_key(t) for t in checked], dtype=KEY_DTYPE)
        return write_shard(self.directory, keys, vecs, self.name, item_ids)

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Return vectors in input order, encoding only distinct texts missing from the cache."""
        checked = check_texts(texts)
        out = np.zeros((len(checked), self.dim), dtype=np.float32)
        slot: dict[bytes, int] = {}
        rows: list[tuple[int, int]] = []  # (output row, slot of its distinct key)
        distinct: list[str] = []
        for row, text in enumerate(checked):
            if has_text(text):
                key = _text_key(text)
                if key not in slot:
                    slot[key] = len(distinct)
                    distinct.append(text)
                rows.append((row, slot[key]))
        if not rows:
            return out
        keys = list(slot)
        found, vectors = self._lookup(keys)
        if not found.all():
            self._refresh()  # only then: listing the folder on every call costs ~0.4 ms
            found, vectors = self._lookup(keys)
        todo = np.flatnonzero(~found)
        if len(todo):
            fresh = self.encoder.encode(
                [distinct[i] for i in todo], batch_size=batch_size, show_progress=show_progress
            )
            fresh = np.asarray(fresh, dtype=np.float32)
            if fresh.shape != (len(todo), self.dim):
                raise RuntimeError(
                    f"encoder {self.name!r} returned shape {fresh.shape}, "
                    f"expected {(len(todo), self.dim)}"
                )
            fresh = fresh.copy()  # own the memory: callers may mutate what the encoder returned
            new_keys = [keys[i] for i in todo]
            try:
                path = write_shard(
                    self.directory, np.array(new_keys, dtype=KEY_DTYPE), fresh, self.name
                )
                self._loaded.add(path.name)
                self._in_recent.add(path.name)
            except OSError as exc:  # only costs encoding them again later
                logger.warning("cannot write embedding cache shard in %s: %s", self.directory, exc)
            for key, vec in zip(new_keys, fresh, strict=True):
                self._recent[key] = vec
            vectors[todo] = fresh
        self.misses += len(todo)
        self.hits += len(rows) - len(todo)
        at, of = zip(*rows, strict=True)
        out[list(at)] = vectors[list(of)]
        return out

    def compact(self) -> int:
        """Merge all shards into one (written atomically before the old ones are removed) and
        index it; returns the number of vectors in it. Reads every shard into memory: for a
        cache too large for that, `index()` is the way to fast lookups.

        Shards written by other processes after this call starts are left alone, so concurrent
        writers lose nothing.
        """
        shards = list_shards(self.directory)
        parts = [s for p in shards if (s := read_shard(p, self.name, self.dim)) is not None]
        if not parts:
            return 0
        keys = np.concatenate([part.keys for part in parts])
        ids = [item for part in parts for item in part.item_ids]
        _, first = np.unique(keys, return_index=True)
        first.sort()  # the first copy of each text, in the order the shards had them
        new = write_shard(
            self.directory,
            keys[first],
            np.concatenate([part.vectors for part in parts])[first],
            self.name,
            [ids[i] for i in first],
        )
        for path in shards:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        index = build_index(self.directory, self.name, self.dim, None, [new], progress=False)
        remove_indexes(self.directory, keep={index.name})
        self._index, self._recent, self._loaded, self._in_recent = None, {}, set(), set()
        self._use_index(index)
        return len(index)


class FrozenEncoder:
    """The vectors of a known set of texts, computed once, to ship to other processes (Ray
    tasks) in place of an encoder: each gets the same bits without a cache on its disk or the
    model's weights in its memory. A text outside the set is encoded by `get_encoder(fallback)`,
    built on first use (a process that never meets one never loads it).
    """

    def __init__(
        self, name: str, dim: int, texts: Sequence[str], vectors: np.ndarray, fallback: str
    ) -> None:
        self.name, self.dim, self.fallback = name, dim, fallback
        self._rows = {_text_key(t): i for i, t in enumerate(texts)}
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._vectors.shape != (len(texts), dim):
            raise ValueError(f"{len(texts)} texts, but vectors of shape {self._vectors.shape}")
        self._fallback: TextEncoder | None = None

    @classmethod
    def of(cls, encoder: TextEncoder, texts: Sequence[str | None], fallback: str) -> FrozenEncoder:
        """`encoder`'s vectors of the distinct non-empty `texts`; `fallback` names `encoder`
        for `get_encoder`."""
        distinct = list(dict.fromkeys(t for t in texts if t is not None and has_text(t)))
        return cls(encoder.name, encoder.dim, distinct, encoder.encode(distinct), fallback)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"FrozenEncoder({self.name!r}, texts={len(self)})"

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_fallback": None}

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        checked = check_texts(texts)
        out = np.zeros((len(checked), self.dim), dtype=np.float32)
        others: dict[int, str] = {}
        for i, text in enumerate(checked):
            if has_text(text):
                row = self._rows.get(_text_key(text))
                if row is None:
                    others[i] = text
                else:
                    out[i] = self._vectors[row]
        if others:
            if self._fallback is None:
                self._fallback = get_encoder(self.fallback)
                if self._fallback.name != self.name:
                    raise ValueError(
                        f"encoder {self.fallback!r} is {self._fallback.name!r} here, but the "
                        f"vectors came from {self.name!r}: install the same version everywhere"
                    )
            rows = list(others)
            out[rows] = self._fallback.encode(list(others.values()), batch_size=batch_size)
        return out


def encoder_from_name(
    name: str, cache_dir: str | Path | None = None, use_cache: bool = True
) -> TextEncoder:
    """`get_encoder(name)`, wrapped in a `CachedEncoder` unless `use_cache` is False."""
    encoder = get_encoder(name)
    return CachedEncoder(encoder, cache_dir) if use_cache else encoder


class MemoryCachedEncoder:
    """Wraps a `TextEncoder` with an in-memory cache bounded in entries and in bytes (least
    recently used out).

    For a long-running service: the texts it meets (visitors' queries, users' descriptions)
    are mostly new, and the disk cache would write a file for each one and list them all on
    every miss, getting slower as it grows. A user's stored description, met again on each of
    their requests, is encoded once while it stays among the most recent. Entries are keyed by
    the text's sha256, not the text, so each costs the same (`ENTRY_OVERHEAD` plus its vector)
    however long the text: `nbytes` never exceeds `max_bytes`.

    Texts encoded inside `persisting()` (a service's catalogue items) still go through the
    disk cache when `encoder` is a `CachedEncoder`: a restart then finds exactly the vectors
    it had, instead of encoding them again.

    `queries`, when given, encodes every other text (visitors' sentences, users' descriptions)
    instead of `encoder`: a faster encoder of the same space (the service's int8 ONNX MiniLM).
    It runs under a lock of its own, so a visitor's sentence never waits for catalogue texts.
    """

    # Bytes per entry besides its vector data: key, array header, dict slot (560 measured with
    # tracemalloc at dim 384).
    ENTRY_OVERHEAD = 600

    def __init__(
        self,
        encoder: TextEncoder,
        max_texts: int = 20_000,
        max_bytes: int = 64 * 2**20,
        queries: TextEncoder | None = None,
    ) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts}")
        self.disk = encoder if isinstance(encoder, CachedEncoder) else None
        self.encoder: TextEncoder = (
            encoder.encoder if isinstance(encoder, CachedEncoder) else encoder
        )
        self.name: str = self.encoder.name
        self.dim: int = self.encoder.dim
        if queries is not None and queries.dim != self.dim:
            raise ValueError(f"queries encode {queries.dim}-d vectors, the encoder {self.dim}-d")
        self.queries = queries
        entry = self.ENTRY_OVERHEAD + 4 * self.dim
        if max_bytes < entry:
            raise ValueError(f"max_bytes must hold one entry ({entry} bytes), got {max_bytes}")
        self.max_texts = max_texts
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._entry_bytes = entry
        self._capacity = min(max_texts, max_bytes // entry)  # entries that fit both bounds
        self._lock = threading.Lock()  # the entries
        self._encoding = threading.Lock()  # the encoder
        self._query_encoding = threading.Lock()  # the queries' encoder
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self._vectors)

    def __repr__(self) -> str:
        return (
            f"MemoryCachedEncoder({self.encoder!r}, max_texts={self.max_texts}, "
            f"max_bytes={self.max_bytes})"
        )

    @property
    def nbytes(self) -> int:
        """Memory the cached entries take (vectors, keys and bookkeeping)."""
        return len(self._vectors) * self._entry_bytes

    def warm_up(self) -> None:
        """Load the encoders' weights now (a first encode), without caching anything."""
        self.encoder.encode(["warm-up"], show_progress=False)
        if self.queries is not None:
            self.queries.encode(["warm-up"], show_progress=False)

    @contextlib.contextmanager
    def persisting(self) -> Iterator[None]:
        """In this block (this thread only), texts missing from memory use the disk cache."""
        before = getattr(self._local, "persist", False)
        self._local.persist = True
        try:
            yield
        finally:
            self._local.persist = before

    @contextlib.contextmanager
    def supplied(self, vectors: Mapping[str, np.ndarray]) -> Iterator[None]:
        """In this block (this thread only), these texts take these vectors instead of being
        encoded: another process encoded them, and every process should hold the same bits."""
        keyed = {_text_key(t): np.asarray(v, dtype=np.float32) for t, v in vectors.items()}
        before: dict[bytes, np.ndarray] | None = getattr(self._local, "supplied", None)
        self._local.supplied = keyed if before is None else {**before, **keyed}
        try:
            yield
        finally:
            self._local.supplied = before

    def _encode_missing(
        self, missing: dict[bytes, str], batch_size: int, show_progress: bool | None
    ) -> dict[bytes, np.ndarray]:
        """Vectors of texts not in memory, one slice of `batch_size` at a time.

        The cache's lock is not held meanwhile, so requests whose texts are cached never wait
        for an encoding; the encoder itself runs one slice at a time (a tokenizer is not safe to
        share between threads), so a visitor's new sentence waits for at most one slice of a
        catalogue write's texts, not for all of them.
        """
        texts, (source, lock) = list(missing.values()), self._source()
        parts = []
        for start in range(0, len(texts), batch_size):
            with lock:
                part = source.encode(
                    texts[start : start + batch_size],
                    batch_size=batch_size,
                    show_progress=show_progress if start == 0 else False,
                )
            part = np.asarray(part, dtype=np.float32)
            expected = (min(batch_size, len(texts) - start), self.dim)
            if part.shape != expected:
                raise RuntimeError(
                    f"encoder {self.name!r} returned shape {part.shape}, expected {expected}"
                )
            parts.append(part)
        vectors = np.concatenate(parts)
        # A copy per row: a row view would keep its whole batch alive after eviction.
        return {k: v.copy() for k, v in zip(missing, vectors, strict=True)}

    def _source(self) -> tuple[TextEncoder, threading.Lock]:
        """The encoder for this thread's texts now, and the lock it runs under."""
        if getattr(self._local, "persist", False):
            return (self.encoder if self.disk is None else self.disk), self._encoding
        if self.queries is not None:
            return self.queries, self._query_encoding
        return self.encoder, self._encoding

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Vectors in input order; only distinct texts not in memory reach the encoder."""
        checked = check_texts(texts)
        out = np.zeros((len(checked), self.dim), dtype=np.float32)
        keys = [_text_key(t) if has_text(t) else None for t in checked]
        given: dict[bytes, np.ndarray] = getattr(self._local, "supplied", None) or {}
        with self._lock:
            missing: dict[bytes, str] = {}
            for row, key in enumerate(keys):
                if key is None:
                    continue
                held = given.get(key)
                if held is not None:
                    out[row] = held
                    continue
                held = self._vectors.get(key)
                if held is not None:
                    out[row] = held
                    self._vectors.move_to_end(key)
                elif key not in missing:
                    missing[key] = checked[row]
            self.misses += len(missing)
            self.hits += sum(k is not None for k in keys) - len(missing)
        if not missing:
            return out
        fresh = self._encode_missing(missing, batch_size, show_progress)
        for row, key in enumerate(keys):
            vector = fresh.get(key) if key is not None else None
            if vector is not None:
                out[row] = vector
        with self._lock:
            self._vectors.update(fresh)
            while len(self._vectors) > self._capacity:
                self._vectors.popitem(last=False)
        return out
