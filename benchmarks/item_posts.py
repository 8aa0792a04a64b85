"""What an item POST costs the engine, and the newcomer request right after it, in-process.

Loads a saved model into the service's `Engine` (one BLAS and OpenMP thread, as `warmstart
serve` runs), then repeats: add one item, time the next few-shot user's request (3 clicks,
folded in), and time another few-shot request. The first pays whatever the POST left to
recount; the second is the steady cost.

    .venv/bin/python benchmarks/item_posts.py --model /tmp/warmstart-bench-serve/synthetic-100k/model \
        [--graph-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy's and implicit's pools start
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from threadpoolctl import threadpool_limits

    from warmstart.models import Recommender
    from warmstart.models.hybrid import WarmStartRecommender
    from warmstart.serve.engine import Engine
    from warmstart.serve.store import EventRecord, ItemRecord

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--graph-dir", type=Path, default=None, help="saved HNSW graphs (else built)")
    p.add_argument("--posts", type=int, default=10)
    args = p.parse_args()
    threadpool_limits(1)
    model = Recommender.load(args.model)
    if not isinstance(model, WarmStartRecommender):
        raise SystemExit(f"{args.model}: the engine serves warmstart models, not {model.name!r}")
    engine = Engine(model, graph_dir=args.graph_dir)
    cat = model.catalogue
    common = np.asarray(cat.item_ids.to_list(), dtype=object)[cat.item_counts() >= 5]
    users = 2 * args.posts
    engine.add_events(
        EventRecord(user_id=f"few-{u}", item_id=str(common[3 * u + j]), type="click")
        for u in range(users)
        for j in range(3)
    )
    text = cat.item_text[0] or "a new item"
    # The first POST builds the id map's hash table and reserves graph room: not measured.
    engine.upsert_items([ItemRecord(item_id="bench-first", text=f"{text} first", attributes={})])
    engine.recommend_user("few-0")
    post, after, steady = [], [], []
    for i in range(args.posts):
        record = ItemRecord(item_id=f"bench-{i}", text=f"{text} new {i}", attributes={})
        t = time.perf_counter()
        engine.upsert_items([record])
        post.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.recommend_user(f"few-{2 * i}")
        after.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.recommend_user(f"few-{2 * i + 1}")
        steady.append(time.perf_counter() - t)
    print(f"{cat.n_items:,} items, {args.posts} one-item POSTs; median (max) ms:")
    for name, values in (
        ("item POST", post),
        ("few-shot request right after it", after),
        ("the next few-shot request", steady),
    ):
        print(f"  {name:<33} {1000 * np.median(values):7.1f} ({1000 * max(values):.1f})")


if __name__ == "__main__":
    main()
