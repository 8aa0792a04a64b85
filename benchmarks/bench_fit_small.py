"""Fit time on a small dataset, the size of a first experiment on one's own data (issue 17).

ML-100K sampled to about 10,000 ratings (12.5 % of them, then the 5-core, items described by
their title), and the two small sparse built-ins. Each fit runs with a warm embedding cache (a
first fit fills it), so the figure is what the model's own work costs; plain ALS on the same
data is timed in the same process as the reference. Prints a table, and JSON with --output.

    .venv/bin/python benchmarks/bench_fit_small.py [--repeats 3] [--output runs/fit-small.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import python_and_cpus, write_result


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from warmstart.data import Dataset, load_builtin
    from warmstart.data.builtin import sparse_sample
    from warmstart.models import WarmStartRecommender
    from warmstart.models.cf import ALSRecommender

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    full = load_builtin("ml-100k")
    datasets: dict[str, Dataset] = {
        "ml-100k-10k": sparse_sample(
            full, interactions=0.125, item_text="{title}", name="ml-100k-10k"
        ),
        "ml-100k-sparse": load_builtin("ml-100k-sparse"),
        "citeulike-a-sparse": load_builtin("citeulike-a-sparse"),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ws-fit-small-") as cache:
        for name, ds in datasets.items():
            WarmStartRecommender(cache_dir=cache).fit(ds)  # fills the embedding cache
            fits, als = [], []
            model = None
            for _ in range(args.repeats):
                start = time.perf_counter()
                model = WarmStartRecommender(cache_dir=cache).fit(ds)
                fits.append(time.perf_counter() - start)
                start = time.perf_counter()
                ALSRecommender().fit(ds)
                als.append(time.perf_counter() - start)
            assert model is not None
            rows.append(
                {
                    "dataset": name,
                    "users": ds.n_users,
                    "items": ds.n_items,
                    "interactions": ds.n_interactions,
                    "fit_s": [round(x, 2) for x in fits],
                    "fit_median_s": round(statistics.median(fits), 2),
                    "als_median_s": round(statistics.median(als), 3),
                    "choices": model.fit_report(),
                }
            )
            r = rows[-1]
            print(
                f"{name}: {r['interactions']:,} interactions, {r['users']} users, "
                f"{r['items']} items; warmstart fit {r['fit_median_s']} s (median of "
                f"{args.repeats}: {r['fit_s']}), ALS {r['als_median_s']} s"
            )
            for line in r["choices"]:
                print("   ", line)
    if args.output:
        write_result(args.output, {"machine": python_and_cpus(), "results": rows})


if __name__ == "__main__":
    main()
