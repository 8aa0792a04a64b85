"""How closely the service's candidate scoring of newcomers matches scoring every item.

Above `exact_below` items, `warmstart serve` scores a newcomer (text-only, few-shot, anonymous)
only on candidates (ANN neighbours of their scoring vector and text, their items' neighbours,
popular items), standardised exactly by the item moments. This loads a saved model,
builds the service's engine, and compares its top-k with the model's full scoring for the same
visitors: recall@k of the exact top-k, and the time of each path.

    .venv/bin/python benchmarks/candidate_recall.py --model DIR [--visitors 200] [--k 10] \\
        [--candidates 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from warmstart.index.exact import topk
from warmstart.models import Recommender
from warmstart.models.base import ProfileQuery
from warmstart.models.hybrid import WarmStartRecommender
from warmstart.serve import engine as engine_module
from warmstart.serve.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--graphs", type=Path, default=None, help="HNSW graph cache folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--candidates", type=int, default=None, help="candidates per source (default: the engine's)"
    )
    args = parser.parse_args()
    threadpool_limits(1)  # as `warmstart serve` runs
    if args.candidates is not None:
        engine_module.CANDIDATES = args.candidates
    model = Recommender.load(args.model)
    assert isinstance(model, WarmStartRecommender)
    graphs = args.graphs or Path(tempfile.mkdtemp(prefix="candidate-recall-"))
    start = time.perf_counter()
    engine = Engine(model, exact_below=0, graph_dir=graphs)
    print(
        f"{model.catalogue.n_items:,} items; engine with HNSW built in "
        f"{time.perf_counter() - start:.0f} s"
    )
    rng = np.random.default_rng(args.seed)
    cat = model.catalogue
    warm = np.flatnonzero(cat.item_counts() > 0)
    kinds = {
        "text-only": lambda i: ProfileQuery(
            text=cat.item_text[int(rng.choice(cat.n_items))],
            attribute_text=None,
            items=np.empty(0, np.int64),
        ),
        "few-shot (3 items)": lambda i: ProfileQuery(
            text=None, attribute_text=None, items=np.unique(rng.choice(warm, size=3, replace=False))
        ),
    }
    for name, make in kinds.items():
        recalls, t_full, t_cand = [], 0.0, 0.0
        for i in range(args.visitors):
            query = make(i)
            t0 = time.perf_counter()
            full = model.score_profiles([query])
            full[0, query.items] = -np.inf
            exact = set(topk(full, args.k)[0][0].tolist())
            t1 = time.perf_counter()
            keys, _ = engine._candidate_topk(query, args.k, True, model.cold_blend_)
            t2 = time.perf_counter()
            t_full, t_cand = t_full + t1 - t0, t_cand + t2 - t1
            recalls.append(len(exact & set(keys.tolist())) / args.k)
        print(
            f"{name}: recall@{args.k} of the full scoring {np.mean(recalls):.3f} "
            f"(min {np.min(recalls):.1f}) over {args.visitors} visitors; "
            f"full {t_full / args.visitors * 1000:.1f} ms, "
            f"candidates {t_cand / args.visitors * 1000:.1f} ms per visitor"
        )


if __name__ == "__main__":
    main()
