"""Recall@k of the ANN index against exact search, on a saved warmstart model's own vectors.

The queries are the model's user scoring vectors and the corpus its item vectors, i.e. exactly
what the service searches for warm users (seen items excluded as the service does).

    .venv/bin/python benchmarks/ann_recall_model.py --model DIR [--k 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from warmstart.index.ann import VectorIndex
from warmstart.models import Recommender
from warmstart.models.hybrid import WarmStartRecommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--expansion-search", type=int, default=256)
    parser.add_argument("--dtype", choices=("f32", "bf16"), default="bf16")
    args = parser.parse_args()
    model = Recommender.load(args.model)
    if not isinstance(model, WarmStartRecommender):
        raise SystemExit("needs a warmstart model")
    items, users = model.item_vectors, model.user_vectors
    seen = model.catalogue.seen.tocsr()
    rng = np.random.default_rng(0)
    warm = np.flatnonzero(np.diff(seen.indptr) > 0)
    chosen = rng.choice(warm, size=min(args.queries, warm.size), replace=False)
    start = time.perf_counter()
    # HNSW whatever the size
    index = VectorIndex(
        items.shape[1], exact_below=0, expansion_search=args.expansion_search, dtype=args.dtype
    )
    index.add(np.arange(len(items)), items)
    build = time.perf_counter() - start
    exclude = [set(seen[u].indices.tolist()) for u in chosen]
    t0 = time.perf_counter()
    approx, _ = index.search(users[chosen], args.k, exclude=exclude)
    search_ms = (time.perf_counter() - t0) / len(chosen) * 1000
    exact, _ = index.search(users[chosen], args.k, exclude=exclude, exact=True)
    hits = [
        len(set(a[a >= 0]) & set(e[e >= 0])) / max((e >= 0).sum(), 1)
        for a, e in zip(approx, exact, strict=True)
    ]
    out = {
        "model": args.model,
        "items": len(items),
        "dim": int(items.shape[1]),
        "queries": len(chosen),
        "k": args.k,
        "expansion_search": args.expansion_search,
        "dtype": args.dtype,
        "build_s": round(build, 2),
        "search_ms_per_query": round(search_ms, 3),
        f"recall@{args.k}": float(np.mean(hits)),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
