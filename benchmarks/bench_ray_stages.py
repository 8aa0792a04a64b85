"""Model selection (a warmstart fit) and `evaluate`, one after another here against side by
side on Ray, on the same data in the same run.

Each stage runs through the code the commands run (`cli.main._fit`'s pieces and
`cli.evaluate.evaluate`), locally with every core, then with `--engine ray` on a local Ray of
2 CPUs (1-CPU tasks); Ray's start counts in its time. What each chose (the ALS settings,
lambdas) and every metric are compared to 4 decimals.

    .venv/bin/python benchmarks/bench_ray_stages.py --dataset citeulike-a
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from common import code_version, command_line, log, machine_info, write_result

from warmstart.cli.data_options import DataSpec
from warmstart.cli.evaluate import evaluate
from warmstart.registry import MODELS
from warmstart.scale import RayExecutor, ray_cluster

MODELS_EVALUATED = "random,popularity,als,item-knn,content-knn,warmstart"


def fit_once(spec: DataSpec, engine: str) -> dict[str, Any]:
    dataset = spec.load()
    model = MODELS["warmstart"]()
    start = time.perf_counter()
    with ray_cluster() if engine == "ray" else contextlib.nullcontext():
        if engine == "ray":
            model.set_executor(RayExecutor())  # type: ignore[attr-defined]
        model.fit(dataset)
    seconds = time.perf_counter() - start
    choice = model.cf_choice_  # type: ignore[attr-defined]
    chosen = {
        "cf": asdict(replace(choice, seconds=0.0)) if choice else None,
        "lambda_items": model.lambda_items_,  # type: ignore[attr-defined]
        "lambda_users": model.lambda_users_,  # type: ignore[attr-defined]
        "text_profile_weight": model.text_profile_weight_,  # type: ignore[attr-defined]
        "cold_blend": repr(model.cold_blend_),  # type: ignore[attr-defined]
    }
    return {
        "seconds": round(seconds, 1),
        "cf_search_seconds": choice.seconds if choice else None,
        "chosen": chosen,
        "report": model.fit_report(),
    }


def evaluate_once(spec: DataSpec, engine: str, protocol: str, models: str) -> dict[str, Any]:
    start = time.perf_counter()
    payload = evaluate(
        spec,
        protocol=protocol,
        models=tuple(models.split(",")),
        n_bootstrap=200,
        progress=False,
        log=lambda line: None,
        engine=engine,
    )
    metrics = {
        f"{r['model']}/{r['segment']}/{name}": value
        for r in payload["results"]
        for name, value in r["metrics"].items()
    }
    fits = {r["model"]: r["fit_seconds"] for r in payload["results"]}
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "fit_seconds": fits,
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="citeulike-a")
    parser.add_argument("--protocol", default="cold-item")
    parser.add_argument("--models", default=MODELS_EVALUATED)
    parser.add_argument("--stages", default="fit,evaluate")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ray-stages.json"))
    args = parser.parse_args()
    spec = DataSpec(dataset=args.dataset)
    stages: dict[str, Any] = {}
    for stage in args.stages.split(","):
        runs = {}
        for engine in ("local", "ray"):
            if stage == "fit":
                runs[engine] = fit_once(spec, engine)
            else:
                runs[engine] = evaluate_once(spec, engine, args.protocol, args.models)
            log(f"{stage} {engine}: {runs[engine]['seconds']} s")
        if stage == "fit":
            runs["same_choices"] = runs["local"]["chosen"] == runs["ray"]["chosen"]
        else:
            a, b = runs["local"]["metrics"], runs["ray"]["metrics"]
            differ = {
                k: (a[k], b[k])
                for k in a
                if a[k] is not None and b.get(k) is not None and round(a[k], 4) != round(b[k], 4)
            }
            runs["metrics_compared"] = len(a)
            runs["differing_at_4_decimals"] = differ
        runs["speed_ratio_ray_to_local"] = round(
            runs["local"]["seconds"] / runs["ray"]["seconds"], 3
        )
        log(f"{stage}: ratio {runs['speed_ratio_ray_to_local']}")
        stages[stage] = runs
    result = {
        "dataset": args.dataset,
        "protocol": args.protocol,
        "models": args.models,
        "stages": stages,
        "machine": machine_info(["ray", "implicit", "numpy"]),
        "code": code_version(),
        "command": command_line(),
    }
    write_result(args.output, result)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
