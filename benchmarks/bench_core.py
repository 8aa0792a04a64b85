"""Core engine benchmark on ML-100K: fit with a cold and a warm embedding cache, recommend for all users,
peak memory. Each phase runs in a fresh process so the cache and memory figures are honest.

    .venv/bin/python benchmarks/bench_core.py [--data-dir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line, write_result

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from warmstart.data import load_builtin
from warmstart.models import WarmStartRecommender
ds = load_builtin("ml-100k", sys.argv[2] or None)
t1 = time.perf_counter()
model = WarmStartRecommender(cache_dir=sys.argv[1]).fit(ds)
t2 = time.perf_counter()
users = list(ds.user_ids.external)
recs = model.recommend(users, k=10)
t3 = time.perf_counter()
json.dump({
    "import_and_load_s": t1 - t0,
    "fit_s": t2 - t1,
    "recommend_all_users_s": t3 - t2,
    "n_users": len(users),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "lambda_items": model.lambda_items_, "lambda_users": model.lambda_users_,
}, sys.stdout)
"""


def run_child(cache: Path, data_dir: str) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(cache), data_dir],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--repeats", type=int, default=3, help="warm-cache runs")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/core.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ws-bench-cache-") as tmp:
        cache = Path(tmp)
        print("cold embedding cache ...", file=sys.stderr)
        cold = run_child(cache, args.data_dir)
        warm = []
        for i in range(args.repeats):
            print(f"warm embedding cache, run {i + 1}/{args.repeats} ...", file=sys.stderr)
            warm.append(run_child(cache, args.data_dir))
    result = {
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d"),
        "cold": cold,
        "warm": warm,
    }
    write_result(args.output, result)

    best = min(warm, key=lambda r: r["fit_s"])
    rows = [
        ("fit, cold embedding cache", cold["fit_s"], "≤ 60 s"),
        (f"fit, warm embedding cache (best of {len(warm)})", best["fit_s"], "≤ 10 s"),
        (
            f"recommend top-10 for all {best['n_users']} users (warm run)",
            best["recommend_all_users_s"],
            "≤ 1 s",
        ),
    ]
    print("| measure | seconds | target |\n|---|---:|---|")
    for name, sec, target in rows:
        print(f"| {name} | {sec:.2f} | {target} |")
    peak = max([cold["peak_rss_mb"]] + [w["peak_rss_mb"] for w in warm])
    print(f"| peak memory (max RSS over all runs) | {peak:.0f} MB | ≤ 2048 MB |")
    warm_fits = ", ".join(f"{w['fit_s']:.2f}" for w in warm)
    print(
        f"\nwarm fit runs: {warm_fits} s; "
        f"lambda_items={best['lambda_items']:g}, lambda_users={best['lambda_users']:g}; "
        f"machine: {result['machine']}"
    )


if __name__ == "__main__":
    main()
