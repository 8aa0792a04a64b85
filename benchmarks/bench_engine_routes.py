"""In-process time of one request per route, `Engine` alone (no HTTP), from one or more trees.

Loads a fitted model as `warmstart serve` does (arrays mapped, HNSW graphs from `--index-cache`
so a 1,000,000-item engine starts in a minute), creates text-only and few-shot users, then
times `recommend_user` for warm, text-only and few-shot users and `recommend_profile` for
visitors with a cached text (explanations on, BLAS on one thread, as the service runs). Each
`--tree` runs in its own interpreter with that tree's `src` first on the path, and the trees
take turns `--repeats` times, so a change is measured against its parent in the same run:

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_engine_routes.py --model /tmp/wsb/synthetic-1m/model \\
        --index-cache /tmp/wsb/hnsw1m --tree /tmp/before --tree .
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, log, machine_info, write_result


def time_routes(model_dir: Path, index_cache: Path | None, requests: int) -> dict[str, float]:
    """Best of 3 mean milliseconds per request, per route, in this interpreter."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from serve_bench.inprocess import add_newcomers

    from warmstart.serve.engine import Engine
    from warmstart.serve.service import load_model

    model = load_model(model_dir)
    engine = Engine(model, graph_dir=index_cache)
    cat = model.catalogue
    rng = np.random.default_rng(0)
    trained = np.asarray(cat.user_ids.to_list(), dtype=object)[cat.user_counts() > 0]
    warm = [str(u) for u in rng.choice(trained, size=min(2000, trained.size), replace=False)]
    texts = add_newcomers(engine, rng)
    routes: dict[str, tuple[Any, Any]] = {
        "warm": (warm, lambda u: engine.recommend_user(u, k=10)),
        "text-only": ([f"text-{i}" for i in range(50)], lambda u: engine.recommend_user(u, k=10)),
        "few-shot": ([f"few-{i}" for i in range(50)], lambda u: engine.recommend_user(u, k=10)),
        "anonymous": (texts, lambda t: engine.recommend_profile(t, {}, [], k=10)),
    }
    out: dict[str, float] = {}
    for name, (args, call) in routes.items():
        cycle = itertools.cycle(args)
        for _ in range(20):
            call(next(cycle))
        best = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(requests):
                call(next(cycle))
            best.append((time.perf_counter() - start) / requests * 1e3)
        out[name] = min(best)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--index-cache", type=Path, default=None, help="saved HNSW graphs")
    p.add_argument("--tree", action="append", default=[], help="source tree; repeatable")
    p.add_argument("--repeats", type=int, default=2, help="turns each tree takes")
    p.add_argument("--requests", type=int, default=200, help="timed requests per route, x3")
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(time_routes(args.model, args.index_cache, args.requests)))
        return
    trees = [Path(t).resolve() for t in args.tree] or [Path(".").resolve()]
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for tree in trees:
            argv = [sys.executable, __file__, "--child", "--model", str(args.model)]
            argv += ["--requests", str(args.requests)]
            if args.index_cache is not None:
                argv += ["--index-cache", str(args.index_cache)]
            env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            ms = json.loads(done.stdout.strip().splitlines()[-1])
            log(
                f"{tree} (turn {repeat + 1}): "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
            )
            runs.append({"tree": str(tree), "code": code_version(tree), "ms": ms})
    result = {
        "benchmark": "engine time per request, per route, in process",
        "command": command_line(),
        "machine": machine_info(("numpy", "scipy", "usearch")),
        "model": str(args.model),
        "runs": runs,
        "best_ms": {
            str(t): {k: min(r["ms"][k] for r in runs if r["tree"] == str(t)) for k in runs[0]["ms"]}
            for t in trees
        },
    }
    if args.output:
        write_result(args.output, result)
    print(json.dumps(result["best_ms"], indent=1))


if __name__ == "__main__":
    main()
