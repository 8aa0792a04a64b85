"""How much a newcomer's clicks steer their recommendations on ML-100K, and what it costs in NDCG.

warmstart scores a user with n events as z(own score) + a * z(the named items' co-occurrence
neighbours) + b * rho^n * (1 - w(n)) * z(popularity), and chooses (a, b, rho) by NDCG@20 on users
held out of a refit, served with nothing or their earliest 1, 3 and 5 items, among the weights
under which 3 events bring in at least half of the top 10. This script takes that validation
split and reports, for a grid of (a, b, rho):

  - NDCG@20 with nothing revealed and with the earliest 3 items revealed (what the choice uses);
  - changed@10: the share of a user's top 10 with 3 items revealed that is not in their top 10
    with nothing revealed (the 3 items excluded from both lists);
  - genre alignment: cosine between the genre counts of the 3 revealed items and of the top 10,
    with nothing revealed and with the 3 items;
  - the share of Sci-Fi, Action or Adventure films in the top 10 of a visitor who names the three
    Star Wars films (model fitted on all the data).

    .venv/bin/python benchmarks/cold_user_blend.py [--min-rating 4] [--output runs/cold-user-blend.json]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from common import write_result

GRID = [
    (1.0, 32.0, 1.0),
    (1.0, 16.0, 1.0),
    (2.0, 16.0, 1.0),
    (2.0, 8.0, 1.0),
    (1.0, 4.0, 1.0),
    (2.0, 4.0, 1.0),
    (2.0, 2.0, 1.0),
    (1.0, 32.0, 0.5),
    (1.0, 16.0, 0.3),
]
STAR_WARS = [50, 172, 181]  # Star Wars (1977), The Empire Strikes Back, Return of the Jedi
WANTED = {"Sci-Fi", "Action", "Adventure"}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from warmstart.data import load_builtin
    from warmstart.index.exact import topk
    from warmstart.metrics import NDCG
    from warmstart.models import WarmStartRecommender
    from warmstart.models.base import ProfileQuery
    from warmstart.models.hybrid import ColdBlend

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--min-rating", type=float, default=None)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()

    ds = load_builtin("ml-100k")
    if args.min_rating is not None:
        ds = ds.with_interactions(ds.weights >= args.min_rating)
    model = WarmStartRecommender().fit(ds)
    cfg = model.config
    fitted = model.cold_blend_
    chosen = (fitted.neighbour_weight, fitted.popularity_weight, fitted.popularity_fade)
    if model.cold_user_choice_ is not None:
        print("chosen:", model.cold_user_choice_.summary())
    revealed = cfg.responsiveness_events

    # The validation the fit chose the cold-user blend on.
    validation = model.cold_user_cases(ds)
    if validation is None:
        raise SystemExit("too few users to hold out for the cold-user validation")
    sub, cases = validation
    users = cases[0][2].shape[0]
    named = cases[revealed][1]  # the revealed items, excluded from both lists below
    genres = ds.item_features["genres"].astype(str)
    onehot = genres.str.get_dummies(sep="|").to_numpy(dtype=np.float64)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    target = unit(np.asarray(named @ onehot))
    pop, metric = sub._pop(), NDCG(cfg.validation_k)
    grid = GRID if chosen in GRID else [chosen, *GRID]
    results: list[dict[str, Any]] = []
    star_wars = ProfileQuery(
        text=None, attribute_text=None, items=model.catalogue.item_ids.to_internal(STAR_WARS)
    )
    for a, b, rho in grid:
        row: dict[str, Any] = {
            "neighbour_weight": a,
            "popularity_weight": b,
            "popularity_fade": rho,
            "chosen": (a, b, rho) == chosen,
        }
        tops = []
        for n in (0, revealed):
            base, rows, truth = cases[n]
            blended = sub.cold_blend(base, rows, ColdBlend(a, b, rho), pop)
            ids, _ = topk(blended, cfg.validation_k, rows)
            row[f"ndcg@{cfg.validation_k} n={n}"] = metric.calc(ids, truth)
            top10, _ = topk(blended, 10, named)
            tops.append(top10)
            row[f"genre alignment n={n}"] = float(
                np.mean(np.sum(unit(onehot[top10].sum(axis=1)) * target, axis=1))
            )
        row["changed@10"] = float(
            np.mean([len(set(x) - set(y)) / 10 for x, y in zip(tops[1], tops[0], strict=True)])
        )
        scores = model.score_profile_parts(model.profile_parts([star_wars], ColdBlend(a, b, rho)))
        scores[0, star_wars.items] = -np.inf
        idx, _ = topk(scores, 10)
        idx = idx[0]
        row["star wars clicker: sci-fi/action/adventure share"] = float(
            np.mean([bool(WANTED & set(genres.iat[i].split("|"))) for i in idx])
        )
        results.append(row)

    keys = list(results[0])
    print(" | ".join(keys))
    for row in results:
        print(
            " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        )
    if args.output:
        out = {"min_rating": args.min_rating, "validation_users": users, "results": results}
        write_result(args.output, out)


if __name__ == "__main__":
    main()
