"""The embedding cache at catalogue scale: vectors held in a dict against one memory-mapped
index, in the same run, on the same shards.

Writes `--n` random unit vectors as Parquet shards of `--block-size` (what `warmstart encode`
leaves), then, each in a fresh process so its memory is its own: `dict` looks `--lookups`
texts up with the index turned off (every shard read into memory, as the cache did before
the index), `build` makes the index, `index` looks the same texts up through it. Reports the
time to the first answer, the lookup time per 1,000 texts, the process's peak RSS and its
resident memory at the end split into anonymous (its own) and file-backed (mapped index pages
the kernel may drop), and checks both give the same bits.

    .venv/bin/python benchmarks/bench_cache_store.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, log, machine_info, write_result

from warmstart.text import CachedEncoder
from warmstart.text.store import KEY_DTYPE, text_key, write_shard


class Refusing:
    """An encoder every text must miss: the benchmark only looks up cached vectors."""

    def __init__(self, dim: int) -> None:
        self.name, self.dim = f"bench-random-{dim}", dim

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        raise AssertionError(f"{len(texts)} texts were not in the cache")


def text(i: int) -> str:
    return f"catalogue item number {i}"


def fill(folder: Path, n: int, dim: int, block: int) -> None:
    directory = CachedEncoder(Refusing(dim), folder).directory
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for start in range(0, n, block):
        ids = range(start, min(n, start + block))
        vectors = rng.standard_normal((len(ids), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        keys = np.array([text_key(text(i)) for i in ids], dtype=KEY_DTYPE)
        write_shard(directory, keys, vectors, f"bench-random-{dim}", [str(i) for i in ids])


def child(mode: str, folder: Path, n: int, dim: int, lookups: int, out: Path) -> None:
    """One measurement in this (fresh) process; writes its figures and vectors to `out`."""
    rng = np.random.default_rng(1)
    sample = [text(int(i)) for i in rng.choice(n, size=lookups, replace=False)]
    result: dict[str, Any] = {}
    if mode == "build":
        start = time.perf_counter()
        result["vectors"] = CachedEncoder(Refusing(dim), folder).index(progress=False)
        result["build_seconds"] = round(time.perf_counter() - start, 2)
    else:
        after = 10**12 if mode == "dict" else 0
        start = time.perf_counter()
        cache = CachedEncoder(Refusing(dim), folder, index_after=after)
        first = cache.encode(sample[:1])
        result["first_answer_seconds"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        got = np.concatenate([cache.encode(sample[i : i + 100]) for i in range(0, lookups, 100)])
        result["ms_per_1000_lookups"] = round(
            1000 * (time.perf_counter() - start) / lookups * 1000, 2
        )
        result["in_memory"] = cache.in_memory
        np.testing.assert_array_equal(first[0], got[0])
        np.save(out.with_suffix(".npy"), got)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result.update(memory_now())
    out.write_text(json.dumps(result))


def memory_now() -> dict[str, float]:
    """Resident memory now, split: anonymous (the process's own) and file-backed (mapped
    pages of the index, which the kernel may drop and read again)."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[f"{key.lower()[3:]}_rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="cached vectors")
    parser.add_argument("--dim", type=int, default=384, help="MiniLM's width")
    parser.add_argument("--block-size", type=int, default=4096, help="rows per shard")
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/cache-store.json"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.n, args.dim, args.lookups, args.out)
        return
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cache"
        start = time.perf_counter()
        fill(folder, args.n, args.dim, args.block_size)
        log(f"wrote {args.n:,} vectors in {time.perf_counter() - start:.1f} s")
        for mode in ["dict", "build", "index"]:
            out = Path(tmp) / f"{mode}.json"
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    *("--child", mode, str(folder), "--out", str(out)),
                    *("--n", str(args.n), "--dim", str(args.dim), "--lookups", str(args.lookups)),
                ],
                check=True,
            )
            runs[mode] = json.loads(out.read_text())
            log(f"{mode}: {runs[mode]}")
        same = np.array_equal(np.load(Path(tmp) / "dict.npy"), np.load(Path(tmp) / "index.npy"))
        disk = {
            kind: round(sum(f.stat().st_size for f in folder.rglob(glob)) / 2**20, 1)
            for kind, glob in [("shards_mb", "shard-*.parquet"), ("index_mb", "index-*/*")]
        }
    result = {
        "n_vectors": args.n,
        "dim": args.dim,
        "block_size": args.block_size,
        "lookups": args.lookups,
        "runs": runs,
        "identical_vectors": same,
        "disk": disk,
        "machine": machine_info(["numpy", "pyarrow"]),
        "code": code_version(),
        "command": command_line(),
    }
    write_result(args.output, result)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
