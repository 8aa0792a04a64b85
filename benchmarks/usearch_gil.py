"""Does a usearch search let another Python thread run? Searches on 1 thread against 2.

If usearch released the GIL during a search, two threads would do the same searches in about
half the time on two cores; holding it, they take as long as one (or longer: they take turns).
The engine's read threads (`warmstart serve --read-threads`) only overlap where the GIL is
released, so this says how much a second read thread can gain on the HNSW part of a request.

    .venv/bin/python benchmarks/usearch_gil.py
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from common import log
from usearch.index import Index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--searches", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    index = Index(ndim=args.dim, metric="cos", dtype="bf16", connectivity=32, expansion_add=64)
    index.add(np.arange(args.n), rng.standard_normal((args.n, args.dim)).astype(np.float32))
    queries = rng.standard_normal((args.searches, args.dim)).astype(np.float32)

    def search(rows: range) -> None:
        for i in rows:
            index.search(queries[i], 128, threads=1)

    for threads in (1, 2, 1, 2):
        share = args.searches // threads
        workers = [
            threading.Thread(target=search, args=(range(t * share, (t + 1) * share),))
            for t in range(threads)
        ]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        log(f"{threads} thread(s): {args.searches} searches in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
