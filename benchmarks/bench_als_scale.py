"""How implicit's ALS fit time grows with interactions on one node: where one machine is
enough, measured, not guessed.

Synthetic implicit feedback (users pick items with a heavy-headed popularity, counts as
strengths), `--sizes` interactions each, fitted with the settings warmstart's final fit uses
(`CFConfig` defaults unless given), on every core; the time of each sweep over users and
items is reported with the matrix's memory.

    .venv/bin/python benchmarks/bench_als_scale.py --sizes 1000000,10000000,50000000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from common import code_version, command_line, log, machine_info, usable_cores, write_result

from warmstart.models.cf import CFConfig, fit_factors


def interactions(n: int, seed: int = 0) -> sp.csr_matrix:
    """n interactions of n/50 users with n/250 items (at least 1,000 of each)."""
    rng = np.random.default_rng(seed)
    users, items = max(1000, n // 50), max(1000, n // 250)
    u = rng.integers(users, size=n, dtype=np.int64)
    i = np.minimum((items * rng.random(n) ** 3).astype(np.int64), items - 1)  # heavy head
    m = sp.csr_matrix((np.ones(n, np.float32), (u, i)), shape=(users, items))
    m.sum_duplicates()  # repeats become counts: strengths, as in click logs
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,50000000")
    parser.add_argument("--factors", type=int, default=CFConfig().factors)
    parser.add_argument("--iterations", type=int, default=5, help="sweeps timed per size")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/als-scale.json"))
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        start = time.perf_counter()
        m = interactions(n)
        built = time.perf_counter() - start
        cf = CFConfig(factors=args.factors, iterations=args.iterations)
        start = time.perf_counter()
        fit_factors(m, cf)
        seconds = time.perf_counter() - start
        run = {
            "interactions": n,
            "nonzeros": int(m.nnz),
            "users": m.shape[0],
            "items": m.shape[1],
            "factors": args.factors,
            "iterations": args.iterations,
            "fit_seconds": round(seconds, 1),
            "seconds_per_iteration": round(seconds / args.iterations, 2),
            "matrix_mb": round((m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 2**20, 1),
            "build_seconds": round(built, 1),
        }
        runs.append(run)
        log(str(run))
        del m
    result = {
        "runs": runs,
        "cores": usable_cores(),
        "machine": machine_info(["implicit", "numpy", "scipy"]),
        "code": code_version(),
        "command": command_line(),
    }
    write_result(args.output, result)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
