"""Model development on the training part only: inner folds cut from a protocol's training data.

`warmstart evaluate` uses its test part once. Design choices (a model default, a new option) are
compared here instead: the benchmark's own split is built, its test and validation parts are
dropped, and the training part is split again into `--folds` inner cold-item or cold-user folds.
Nothing here reads a test interaction.

    python benchmarks/dev_folds.py --protocol cold-item --model dropoutnet \\
        --model warmstart --model 'warmstart:{"mapper": "ridge"}'
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from warmstart.cli.data_options import DataSpec
from warmstart.cli.evaluate import build_split
from warmstart.eval.runner import evaluate_segment
from warmstart.eval.splits import Split, cold_item_split, cold_user_split
from warmstart.registry import model_class
from warmstart.text import encoder_from_name


def inner_folds(args: argparse.Namespace) -> list[Split]:
    min_rating = None if args.min_rating in ("", "none") else float(args.min_rating)
    spec = DataSpec(dataset=args.dataset, min_rating=min_rating)
    train = build_split(spec.load(), args.protocol, split=args.split, seed=args.seed).train
    seeds = [args.seed + 11 + i for i in range(args.folds)]
    if args.protocol == "cold-item":
        return [cold_item_split(train, validation_fraction=0.0, seed=s) for s in seeds]
    return [cold_user_split(train, fewshot=(0, 3), validation_fraction=0.0, seed=s) for s in seeds]


def parse_model(text: str) -> tuple[str, dict[str, Any]]:
    """`name` or `name:{"param": value, ...}`."""
    name, _, params = text.partition(":")
    return name, (json.loads(params) if params else {})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--min-rating", default="4", help="'none' for implicit data")
    parser.add_argument("--split", default="random", help="the benchmark's split, e.g. dropoutnet")
    parser.add_argument("--protocol", choices=("cold-item", "cold-user"), default="cold-item")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--model", action="append", required=True)
    args = parser.parse_args(argv)
    folds = inner_folds(args)
    encoder = encoder_from_name("default")
    k = int(args.metric.split("@")[1])
    for text in args.model:
        name, params = parse_model(text)
        values, seconds = [], []
        for split in folds:
            model = model_class(name)(**params)
            if hasattr(model, "set_encoder"):
                model.set_encoder(encoder)
            start = time.perf_counter()
            model.fit(split.train)
            seconds.append(time.perf_counter() - start)
            values.append(
                [
                    evaluate_segment(model, seg, split.train, (k,), progress=False)[0][
                        args.metric
                    ].mean()
                    for seg in split.segments
                    if seg.name != "all"
                ]
            )
        table = np.asarray(values)
        names = [s.name for s in folds[0].segments if s.name != "all"]
        means = ", ".join(f"{n} {m:.4f}" for n, m in zip(names, table.mean(axis=0), strict=True))
        print(f"{text}: {args.metric} mean over {len(folds)} folds: {means}", flush=True)
        print(f"  per fold: {np.round(table, 4).tolist()}", flush=True)
        print(f"  fit seconds per fold: {np.round(seconds, 1).tolist()}", flush=True)


if __name__ == "__main__":
    main()
