"""Encoding a catalogue into the embedding cache: one local process against Ray with 1 and 2
encoder actors, on the same synthetic item texts, in the same run.

Each configuration fills an empty cache of its own through `warmstart.scale.encode_texts`,
the code `warmstart encode` runs; Ray's start (a local Ray for each Ray configuration) counts
in its time. CPU-seconds are the whole machine's busy time over the run (/proc/stat), so
Ray's own processes count too: run it on a quiet machine. The vectors of every configuration
are compared with the local ones at the end.

    .venv/bin/python benchmarks/bench_encode.py --n 100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, log, machine_info, write_result
from serve_bench.catalogue import make_synthetic

from warmstart.scale import encode_texts
from warmstart.text import CachedEncoder, get_encoder

CONFIGS = {  # name: (engine, actors, CPUs per actor)
    "local": ("local", 1, 0.0),
    "ray-1x2": ("ray", 1, 2.0),  # 1 actor of 2 CPUs
    "ray-2x1": ("ray", 2, 1.0),  # 2 actors of 1 CPU
}


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (every core, every process)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="item texts")
    parser.add_argument("--encoder", default="default")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/encode-ray.json"))
    args = parser.parse_args()
    texts = list(make_synthetic(args.n, 1000, 5000, 200, seed=0).item_texts())
    log(f"{len(texts):,} texts, {np.mean([len(t.split()) for t in texts]):.1f} words on average")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            engine, actors, cpus = CONFIGS[name]
            folder = Path(tmp) / f"cache-{len(runs)}"
            busy, start = busy_seconds(), time.perf_counter()
            report = encode_texts(
                texts,
                args.encoder,
                folder,
                engine=engine,
                actors=actors,
                cpus_per_actor=cpus or 1.0,
                batch_size=args.batch_size,
                block_size=args.block_size,
                progress=False,
            )
            wall, cpu = time.perf_counter() - start, busy_seconds() - busy
            runs[name] = {
                "wall_seconds": round(wall, 2),
                "texts_per_second": round(report.encoded / wall, 1),
                "cpu_seconds": round(cpu, 1),
                "cpu_ms_per_text": round(1000 * cpu / report.encoded, 3),
                "encoded": report.encoded,
                "folder": str(folder),
            }
            log(f"{name}: {runs[name]}")
        encoder = get_encoder(args.encoder)
        first = next(iter(runs))
        base = CachedEncoder(encoder, runs[first]["folder"]).encode(texts)
        for run in runs.values():
            other = CachedEncoder(encoder, run.pop("folder")).encode(texts)
            run[f"max_abs_difference_to_{first}"] = float(np.abs(other - base).max())
            run["identical_rows"] = int(np.all(other == base, axis=1).sum())
            run[f"speed_ratio_to_{first}"] = round(
                runs[first]["wall_seconds"] / run["wall_seconds"], 3
            )
    result = {
        "n_texts": len(texts),
        "encoder": encoder.name,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "runs": runs,
        "machine": machine_info(["torch", "ray", "sentence-transformers"]),
        "code": code_version(),
        "command": command_line(),
    }
    write_result(args.output, result)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
