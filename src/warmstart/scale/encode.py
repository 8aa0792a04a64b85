"""Encode a catalogue's texts into the embedding cache, on this machine or on a Ray cluster.

`warmstart fit`, `evaluate` and `serve` read item vectors from the embedding cache
(`warmstart.text.CachedEncoder`), so a catalogue encoded ahead of time, here, is never encoded
again. Only texts the cache does not hold yet are encoded, in blocks of `block_size`, and each
block is written as one shard the moment it is done: a run that stops part-way loses at most
the blocks in flight, and running it again does only what is left.

On Ray the blocks go through a Ray Data pipeline to a pool of encoder actors (each loads the
encoder once) and come back to this process, which writes them. Texts given in memory (and
items files other than Parquet, read here with line-numbered checks) go in as blocks from this
process; a Parquet items file is read in blocks on the cluster (`ray.data.read_parquet`), each
block rendered with the template and stripped of texts the cache holds before it is encoded, so
this process never holds the catalogue: the file must be at the same path (or URI) on every
node. Both engines give the same vectors up to float rounding (the same bits when the blocks
are the same).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.data import TextTemplate, parquet_item_template, read_item_texts
from warmstart.errors import ConfigError
from warmstart.scale.cluster import check_actor_layout, check_engine, ray_cluster, require_ray
from warmstart.text import CachedEncoder, get_encoder
from warmstart.text.core import check_texts, has_text, progress_bar, want_progress
from warmstart.text.store import KEY_DTYPE, text_key

BLOCK_SIZE = 4096  # texts per shard: a stopped run redoes at most this many per actor


@dataclass(frozen=True)
class EncodeReport:
    """What an encode run found and did."""

    encoder: str
    directory: str
    engine: str
    actors: int  # encoder actors that ran (no more than there were blocks)
    texts: int  # rows given
    # Rows with no text, distinct texts and those already cached: None where the rows were
    # read in blocks on Ray and never seen whole.
    empty: int | None  # rows with no text: zero vectors, never encoded
    distinct: int | None  # distinct non-empty texts
    cached: int | None  # of those, already in the cache before the run
    encoded: int  # encoded by this run
    blocks: int  # shards written
    indexed: int  # vectors in the cache's memory-mapped index after the run
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_texts(
    texts: Sequence[str | None],
    encoder: str = "default",
    cache_dir: str | Path | None = None,
    *,
    engine: str = "local",
    address: str | None = None,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    batch_size: int = 64,
    block_size: int = BLOCK_SIZE,
    progress: bool | None = None,
    item_ids: Sequence[str] | None = None,
) -> EncodeReport:
    """Put a vector for every non-empty text into the cache of `encoder` under `cache_dir`
    (default: $WARMSTART_CACHE_DIR, else the user cache folder).

    `engine="ray"` encodes on the Ray cluster at `address` (default: a Ray started for the run
    on this machine) with `actors` encoder actors of `cpus_per_actor` CPUs each. `item_ids`,
    one per text, are stored beside the vectors (a text several items share keeps the first).
    At the end every shard goes into the cache's memory-mapped index.
    """
    kind = check_engine(engine)
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1: {batch_size}, {block_size}")
    started = time.perf_counter()
    rows = check_texts([t if t is not None else "" for t in texts])
    if item_ids is not None and len(item_ids) != len(rows):
        raise ValueError(f"{len(item_ids)} item ids for {len(rows)} texts")
    owner: dict[str, str] = {}
    for text, item in zip(rows, item_ids or (), strict=False):
        owner.setdefault(text, str(item))
    cache = CachedEncoder(get_encoder(encoder), cache_dir)
    todo = cache.missing(rows)
    nonempty = [t for t in rows if has_text(t)]
    distinct = len(set(nonempty))
    blocks = [todo[i : i + block_size] for i in range(0, len(todo), block_size)]
    with progress_bar(len(todo), want_progress(progress, len(todo)), "encoding") as bar:
        if kind == "local" or not blocks:
            for block in blocks:
                vectors = cache.encoder.encode(block, batch_size=batch_size, show_progress=False)
                cache.add(block, vectors, _owners(block, owner))
                bar.update(len(block))
        else:
            for block_texts, vectors in _ray_blocks(
                blocks, encoder, address, actors, cpus_per_actor, batch_size
            ):
                cache.add(block_texts, vectors, _owners(block_texts, owner))
                bar.update(len(block_texts))
    indexed = cache.index(progress=want_progress(progress, len(todo)) and bool(todo))
    left = cache.missing(todo)
    if left:
        raise RuntimeError(f"{len(left)} texts came back without vectors; run again to finish")
    return EncodeReport(
        encoder=cache.name,
        directory=str(cache.directory),
        engine=kind,
        actors=min(actors, len(blocks)) if kind == "ray" else 1,
        texts=len(rows),
        empty=len(rows) - len(nonempty),
        distinct=distinct,
        cached=distinct - len(todo),
        encoded=len(todo),
        blocks=len(blocks),
        indexed=indexed,
        seconds=round(time.perf_counter() - started, 3),
    )


def encode_items(
    path: str | Path,
    encoder: str = "default",
    cache_dir: str | Path | None = None,
    *,
    item_col: str = "item_id",
    text: str | None = None,
    engine: str = "local",
    address: str | None = None,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    batch_size: int = 64,
    block_size: int = BLOCK_SIZE,
    progress: bool | None = None,
) -> EncodeReport:
    """`encode_texts` of an items file's texts (the template and checks of `fit`), each stored
    with its item's id. On Ray a Parquet file is read in blocks on the cluster; other files are
    read here first."""
    kind = check_engine(engine)
    if kind == "local" or Path(path).suffix.lower() != ".parquet":
        ids, texts = read_item_texts(path, item_col=item_col, item_text=text)
        return encode_texts(
            texts,
            encoder,
            cache_dir,
            engine=kind,
            address=address,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            batch_size=batch_size,
            block_size=block_size,
            progress=progress,
            item_ids=[str(i) for i in ids],
        )
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1: {batch_size}, {block_size}")
    started = time.perf_counter()
    template = parquet_item_template(path, item_col=item_col, item_text=text)
    rows = _parquet_rows(path)
    cache = CachedEncoder(get_encoder(encoder), cache_dir)
    encoded = blocks = 0
    with progress_bar(rows, want_progress(progress, rows), "encoding") as bar:
        for block_ids, block_texts, vectors in _ray_file_blocks(
            path,
            template,
            item_col,
            cache,
            encoder,
            address,
            actors,
            cpus_per_actor,
            batch_size,
            block_size,
        ):
            cache.add(block_texts, vectors, block_ids)
            encoded, blocks = encoded + len(block_texts), blocks + 1
            bar.update(len(block_texts))
    indexed = cache.index(progress=want_progress(progress, encoded) and encoded > 0)
    return EncodeReport(
        encoder=cache.name,
        directory=str(cache.directory),
        engine=kind,
        actors=actors,
        texts=rows,
        empty=None,
        distinct=None,
        cached=None,
        encoded=encoded,
        blocks=blocks,
        indexed=indexed,
        seconds=round(time.perf_counter() - started, 3),
    )


def _parquet_rows(path: str | Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def _ray_file_blocks(
    path: str | Path,
    template: TextTemplate,
    item_col: str,
    cache: CachedEncoder,
    encoder: str,
    address: str | None,
    actors: int,
    cpus_per_actor: float,
    batch_size: int,
    block_size: int,
) -> Iterator[tuple[list[str | None], list[str], np.ndarray]]:
    """(item ids, texts, vectors) per encoded block of a Parquet file Ray Data reads."""
    require_ray()
    import ray
    import ray.data

    with ray_cluster(address) as cpus:
        check_actor_layout(actors, cpus_per_actor, cpus)
        if actors * cpus_per_actor > cpus - 1:
            raise ConfigError(
                f"{actors} actors x {cpus_per_actor:g} CPUs leave less than the one CPU of the "
                f"{cpus} that reading the file needs (Ray Data would wait forever, Ray issue "
                "44687): use fewer actors or fewer CPUs per actor"
            )
        known = [ray.put(cache.known_keys())]  # in a list: handed on as a reference
        rendered = ray.data.read_parquet(str(path)).map_batches(
            functools.partial(_render_block, template=template, item_col=item_col, known=known),
            batch_format="pandas",
            batch_size=block_size,
        )
        encoded = rendered.map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "encoder": encoder,
                "threads": max(1, math.floor(cpus_per_actor)),
                "batch_size": batch_size,
            },
            batch_size=block_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
        )
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            if len(batch["text"]):
                ids = [None if i is None else str(i) for i in batch["item_id"].tolist()]
                texts = [str(t) for t in batch["text"]]
                yield ids, texts, np.asarray(batch["vector"], dtype=np.float32)


def _render_block(frame: Any, template: TextTemplate, item_col: str, known: list[Any]) -> Any:
    """A block's texts (with their items' ids) that are non-empty and not cached yet, each
    once: the rows an encoder actor gets."""
    import pandas as pd
    import ray

    held = ray.get(known[0])
    texts = template.render_frame(frame)
    ids = frame[item_col].tolist()
    seen: set[bytes] = set()
    keep_ids: list[str | None] = []
    keep_texts: list[str] = []
    keys = [text_key(t) if t is not None and has_text(t) else b"" for t in texts]
    pos = np.searchsorted(held, np.array(keys, dtype=KEY_DTYPE)) if len(held) else None
    for i, (key, item, txt) in enumerate(zip(keys, ids, texts, strict=True)):
        if not key or key in seen:
            continue
        if pos is not None and pos[i] < len(held) and held[pos[i]] == key:
            continue
        seen.add(key)
        keep_ids.append(None if item is None else str(item))
        keep_texts.append(str(txt))
    return pd.DataFrame({"item_id": keep_ids, "text": keep_texts}, dtype=object)


def _owners(texts: Sequence[str], owner: dict[str, str]) -> list[str | None] | None:
    return [owner.get(t) for t in texts] if owner else None


def _ray_blocks(
    blocks: list[list[str]],
    encoder: str,
    address: str | None,
    actors: int,
    cpus_per_actor: float,
    batch_size: int,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(texts, vectors) per block, as the actors finish them (in no particular order)."""
    require_ray()
    import ray.data

    with ray_cluster(address) as cpus:
        check_actor_layout(actors, cpus_per_actor, cpus)
        actors = min(actors, len(blocks))  # an actor with no block would only load a model
        dataset = ray.data.from_items([{"texts": block} for block in blocks])
        encoded = dataset.map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "encoder": encoder,
                "threads": max(1, math.floor(cpus_per_actor)),
                "batch_size": batch_size,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
        )
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            yield [str(t) for t in batch["text"]], np.asarray(batch["vector"], dtype=np.float32)


class EncodeActor:
    """One encoder, loaded once per actor, that encodes a block per call."""

    def __init__(self, encoder: str, threads: int, batch_size: int) -> None:
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(threads)
        self.encoder = get_encoder(encoder)
        self.batch_size = batch_size

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        """Blocks of texts handed in by the driver (`texts`: one list per row), or rows of a
        file (`item_id`, `text`)."""
        if "texts" in batch:
            texts = [str(t) for block in batch["texts"] for t in block]
            ids: list[Any] | None = None
        else:
            texts = [str(t) for t in batch["text"]]
            ids = list(batch["item_id"])
        if texts:
            vectors = self.encoder.encode(texts, batch_size=self.batch_size, show_progress=False)
        else:
            vectors = np.zeros((0, self.encoder.dim), dtype=np.float32)
        out = {"text": np.array(texts, dtype=object), "vector": vectors}
        if ids is not None:
            out["item_id"] = np.array(ids, dtype=object)
        return out
