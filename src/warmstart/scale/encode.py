"""Encode a catalogue's texts into the embedding cache, on this machine or on a Ray cluster.

`warmstart fit`, `evaluate` and `serve` read item vectors from the embedding cache
(`warmstart.text.CachedEncoder`), so a catalogue encoded ahead of time, here, is never encoded
again. Only texts the cache does not hold yet are encoded, in blocks of `block_size`, and each
block is written as one shard the moment it is done: a run that stops part-way loses at most
the blocks in flight, and running it again does only what is left.

On Ray the blocks go through a Ray Data pipeline to a pool of encoder actors (each loads the
encoder once) and come back to this process, which writes them: the cluster needs no shared
file system. Both engines encode the same blocks with the same batch size, so they give the
same vectors up to float rounding.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.scale.cluster import check_actor_layout, check_engine, ray_cluster, require_ray
from warmstart.text import CachedEncoder, get_encoder
from warmstart.text.core import check_texts, has_text, progress_bar, want_progress

BLOCK_SIZE = 4096  # texts per shard: a stopped run redoes at most this many per actor


@dataclass(frozen=True)
class EncodeReport:
    """What an encode run found and did."""

    encoder: str
    directory: str
    engine: str
    actors: int  # encoder actors that ran (no more than there were blocks)
    texts: int  # rows given
    empty: int  # rows with no text: zero vectors, never encoded
    distinct: int  # distinct non-empty texts
    cached: int  # of those, already in the cache before the run
    encoded: int  # encoded by this run
    blocks: int  # shards written
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
) -> EncodeReport:
    """Put a vector for every non-empty text into the cache of `encoder` under `cache_dir`
    (default: $WARMSTART_CACHE_DIR, else the user cache folder).

    `engine="ray"` encodes on the Ray cluster at `address` (default: a Ray started for the run
    on this machine) with `actors` encoder actors of `cpus_per_actor` CPUs each.
    """
    kind = check_engine(engine)
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1: {batch_size}, {block_size}")
    started = time.perf_counter()
    rows = check_texts([t if t is not None else "" for t in texts])
    cache = CachedEncoder(get_encoder(encoder), cache_dir)
    todo = cache.missing(rows)
    nonempty = [t for t in rows if has_text(t)]
    distinct = len(set(nonempty))
    blocks = [todo[i : i + block_size] for i in range(0, len(todo), block_size)]
    with progress_bar(len(todo), want_progress(progress, len(todo)), "encoding") as bar:
        if kind == "local" or not blocks:
            for block in blocks:
                vectors = cache.encoder.encode(block, batch_size=batch_size, show_progress=False)
                cache.add(block, vectors)
                bar.update(len(block))
        else:
            for block_texts, vectors in _ray_blocks(
                blocks, encoder, address, actors, cpus_per_actor, batch_size
            ):
                cache.add(block_texts, vectors)
                bar.update(len(block_texts))
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
        seconds=round(time.perf_counter() - started, 3),
    )


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

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for block in batch["texts"] for t in block]
        vectors = self.encoder.encode(texts, batch_size=self.batch_size, show_progress=False)
        return {"text": np.array(texts, dtype=object), "vector": vectors}
