"""warmstart-ft's spread over fine-tuning seeds, on the cold-item split that `evaluate` uses.

`warmstart evaluate` fits each model once; fine-tuning's result moves with its seed (the order
of batches and dropout draws). This fits warmstart-ft once per seed on the same split and prints
the cold segment's figures, computed by the same functions as `evaluate`.

    .venv/bin/python benchmarks/ft_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

from warmstart.cli.data_options import DataSpec
from warmstart.cli.evaluate import build_split
from warmstart.eval.runner import evaluate_segment
from warmstart.finetune.recommender import WarmStartFTRecommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--min-rating", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    data = DataSpec(dataset=args.dataset, min_rating=args.min_rating).load()
    split = build_split(data, "cold-item", seed=0)
    cold = next(s for s in split.segments if s.name == "cold")
    for seed in args.seeds:
        start = time.perf_counter()
        model = WarmStartFTRecommender(finetune={"seed": seed}).fit(split.train)
        values = evaluate_segment(model, cold, data, (10, 20), progress=False)[0]
        recalls = ", ".join(f"{h['recall']:.3f}" for h in model.finetune_history_)
        print(
            f"seed {seed}: ndcg@10 {values['ndcg@10'].mean():.4f}, "
            f"recall@20 {values['recall@20'].mean():.4f}; validation per epoch {recalls}; "
            f"fit {time.perf_counter() - start:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
