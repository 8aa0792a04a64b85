"""VectorIndex benchmark on synthetic clustered vectors (or real ones, --vectors): HNSW build time,
Recall@k against exact search, single-query latency (HNSW and exact), incremental add and remove,
recall after churn, and an expansion_search sweep on the same graph.

    .venv/bin/python benchmarks/bench_ann.py [--n 100000] [--dim 448] [--queries 2000] [--k 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import cpu_count, package_versions, python_and_cpus, write_result
from tqdm import tqdm

from warmstart.index import VectorIndex


def clustered(
    rng: np.random.Generator, n: int, centres: np.ndarray, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points around unit-norm centres with per-item norm jitter, like normalised-ish embeddings."""
    dim = centres.shape[1]
    labels = rng.integers(len(centres), size=n)
    x = centres[labels] + spread * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= rng.uniform(0.8, 1.2, size=(n, 1)).astype(np.float32)
    return x.astype(np.float32), labels


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k found by the approximate search."""
    hits = [
        len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist()))
        for a, e in zip(approx, exact, strict=True)
    ]
    denom = [max(1, int((e >= 0).sum())) for e in exact]
    return float(np.mean(np.asarray(hits) / np.asarray(denom)))


def latencies_ms(index: VectorIndex, queries: np.ndarray, k: int, exact: bool, desc: str) -> dict:
    """Per-query wall time of single-query searches, in milliseconds."""
    times = np.empty(len(queries))
    for i in tqdm(range(len(queries)), desc=desc, leave=False, file=sys.stderr):
        t0 = time.perf_counter()
        index.search(queries[i], k, exact=exact)
        times[i] = time.perf_counter() - t0
    times *= 1e3
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(times.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=448)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--spread", type=float, default=1.0, help="cluster noise / centre norm")
    parser.add_argument("--connectivity", type=int, default=32)
    parser.add_argument("--expansion-add", type=int, default=128)
    parser.add_argument("--expansion-search", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="usearch threads, 0 = all cores")
    parser.add_argument("--n-add", type=int, default=1000, help="vectors added incrementally")
    parser.add_argument("--latency-queries", type=int, default=0, help="0 = all --queries")
    parser.add_argument(
        "--sweep-ef",
        default="64,128,256,512",
        help="expansion_search values to re-measure recall and latency at on the same graph "
        "(comma-separated; empty to skip)",
    )
    parser.add_argument("--sweep-latency-queries", type=int, default=500)
    parser.add_argument(
        "--vectors",
        type=Path,
        default=None,
        help="benchmark on real embeddings from a .npy (rows, dim) file instead of synthetic data "
        "(held-out rows are the queries; --n caps the index size)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/ann.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    if args.vectors is not None:
        # Real embeddings: held-out rows are the queries, so they come from the same distribution.
        real = np.load(args.vectors).astype(np.float32)
        need = args.queries + args.n_add + 1
        if real.ndim != 2 or real.shape[0] <= need:
            raise SystemExit(f"--vectors needs a 2-D array with more than {need} rows")
        real = real[rng.permutation(real.shape[0])]
        queries, extra = real[: args.queries], real[args.queries : args.queries + args.n_add]
        base = real[args.queries + args.n_add :][: args.n]
        args.n, args.dim = base.shape
        args.clusters, args.spread = None, None
    else:
        centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        data, _ = clustered(rng, args.n + args.n_add, centres, args.spread)
        base, extra = data[: args.n], data[args.n :]
        queries, _ = clustered(rng, args.queries, centres, args.spread)
    keys = np.arange(args.n, dtype=np.int64)
    n_lat = args.latency_queries or args.queries

    index = VectorIndex(
        args.dim,
        exact_below=min(20_000, args.n),
        connectivity=args.connectivity,
        expansion_add=args.expansion_add,
        expansion_search=args.expansion_search,
        threads=args.threads,
    )
    print(f"building HNSW over {args.n} x {args.dim} ...", file=sys.stderr)
    t0 = time.perf_counter()
    index.add(keys, base)  # crosses exact_below: one batch build of the graph
    build_s = time.perf_counter() - t0
    assert not index.is_exact

    t0 = time.perf_counter()
    approx, _ = index.search(queries, args.k)
    batch_hnsw_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact, _ = index.search(queries, args.k, exact=True)
    batch_exact_s = time.perf_counter() - t0
    recall = recall_at_k(approx, exact)

    lat_hnsw = latencies_ms(index, queries[:n_lat], args.k, False, "HNSW single-query")
    lat_exact = latencies_ms(index, queries[:n_lat], args.k, True, "exact single-query")

    # expansion_search only affects queries, so one graph answers for every value. The benchmark
    # reaches into the usearch index for this; the service sets it once at construction.
    sweep = []
    hnsw = index._hnsw
    assert hnsw is not None
    for ef in [int(v) for v in args.sweep_ef.split(",") if v.strip()]:
        hnsw.expansion_search = ef
        t0 = time.perf_counter()
        approx_ef, _ = index.search(queries, args.k)
        batch_s = time.perf_counter() - t0
        lat = latencies_ms(
            index, queries[: args.sweep_latency_queries], args.k, False, f"ef_search={ef}"
        )
        sweep.append(
            {
                "expansion_search": ef,
                f"recall@{args.k}": recall_at_k(approx_ef, exact),
                "batch_search_s": batch_s,
                **lat,
            }
        )
    hnsw.expansion_search = args.expansion_search

    # Incremental add, one vector per call (the service's pattern), then remove them again.
    new_keys = np.arange(args.n, args.n + args.n_add, dtype=np.int64)
    t0 = time.perf_counter()
    for i in tqdm(range(args.n_add), desc="incremental add", leave=False, file=sys.stderr):
        index.add(new_keys[i : i + 1], extra[i : i + 1])
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add(keys[: args.n_add], extra)  # batch upsert of existing keys
    upsert_batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in tqdm(range(args.n_add), desc="remove", leave=False, file=sys.stderr):
        index.remove(new_keys[i : i + 1])
    remove_s = time.perf_counter() - t0

    # Recall after churn (1,000 upserts of existing keys and 1,000 add+remove cycles).
    approx2, _ = index.search(queries, args.k)
    exact2, _ = index.search(queries, args.k, exact=True)
    recall_churn = recall_at_k(approx2, exact2)

    result = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "vectors": None if args.vectors is None else str(args.vectors),
        "clusters": args.clusters,
        "spread": args.spread,
        "connectivity": args.connectivity,
        "expansion_add": args.expansion_add,
        "expansion_search": args.expansion_search,
        "threads": args.threads,
        "build_s": build_s,
        f"recall@{args.k}": recall,
        f"recall@{args.k}_after_churn": recall_churn,
        "batch_search_hnsw_s": batch_hnsw_s,
        "batch_search_exact_s": batch_exact_s,
        "single_query_hnsw": lat_hnsw,
        "single_query_exact": lat_exact,
        "latency_queries": n_lat,
        "expansion_search_sweep": sweep,
        "add_ms_per_vector": 1e3 * add_s / args.n_add,
        "upsert_batch_ms_per_vector": 1e3 * upsert_batch_s / args.n_add,
        "remove_ms_per_vector": 1e3 * remove_s / args.n_add,
        **package_versions(("usearch", "numpy")),
        **python_and_cpus(),
    }
    rows = [
        ("HNSW build", f"{build_s:.1f} s ({args.n / build_s:,.0f} vectors/s)"),
        (f"Recall@{args.k} HNSW vs exact", f"{recall:.4f}"),
        (f"Recall@{args.k} after churn", f"{recall_churn:.4f}"),
        (
            "single query HNSW p50 / p99",
            f"{lat_hnsw['p50_ms']:.2f} / {lat_hnsw['p99_ms']:.2f} ms",
        ),
        (
            "single query exact p50 / p99",
            f"{lat_exact['p50_ms']:.2f} / {lat_exact['p99_ms']:.2f} ms",
        ),
        (
            f"batch of {args.queries}: HNSW / exact",
            f"{batch_hnsw_s:.2f} / {batch_exact_s:.2f} s",
        ),
        ("incremental add (1 per call)", f"{result['add_ms_per_vector']:.3f} ms/vector"),
        ("batch upsert of existing keys", f"{result['upsert_batch_ms_per_vector']:.3f} ms/vector"),
        ("remove (1 per call)", f"{result['remove_ms_per_vector']:.3f} ms/vector"),
    ]
    print(
        f"VectorIndex n={args.n} dim={args.dim} k={args.k} M={args.connectivity} "
        f"ef_add={args.expansion_add} ef_search={args.expansion_search} "
        f"threads={args.threads or cpu_count()}"
    )
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if sweep:
        print(
            f"  expansion_search sweep (same graph; latency over {args.sweep_latency_queries} queries):"
        )
        for row in sweep:
            print(
                f"    ef={row['expansion_search']:<4}  recall@{args.k} {row[f'recall@{args.k}']:.4f}  "
                f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
                f"batch {row['batch_search_s']:.2f} s"
            )
    write_result(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
