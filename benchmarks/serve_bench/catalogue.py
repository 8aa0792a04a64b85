"""The catalogues the serving benchmark runs on, and the model fitted on each.

A fit takes seconds on ML-100K but about 6 minutes on synthetic-100k, so the model is kept in
the work folder with the parameters it was fitted with and reused while they match.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import log, write_result

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]

# Synthetic catalogues: items, users, interactions, topics (each overridable by a flag).
SYNTHETIC = {
    "synthetic-100k": (100_000, 20_000, 1_000_000, 200),
    "synthetic-1m": (1_000_000, 50_000, 2_000_000, 1_000),
}


# At 1,000,000 items the fit's searches and its kernel map do not fit in this machine's 24 GB:
# choosing the ALS settings scores held-out users against every item densely, the penalty
# search (RidgeCV) passed 14 GB at 250,000 items, and the kernel map's features (warm items x
# 2,000 landmarks, float64) passed 18 GB, as did choosing the warm blend weights (dense held-out
# users x items scores) and the cold-user blend (a refit, standardised dense scores). So: the
# given ALS settings, one penalty, a linear map, and every blend weight given.
SCALE_SETTINGS: dict[str, Any] = {
    "tune_cf": False,
    "mapper": "ridge",
    "ridge_alphas": [10.0],
    "warm_neighbour_weight": 0.5,
    "warm_popularity_weight": 0.25,
    "new_item_boost": 0.5,
    "popularity_fade": 0.5,
}


def synthetic_sizes(args: argparse.Namespace) -> tuple[int, int, int, int]:
    """The catalogue's sizes, with any --synthetic-* flag given taking the place of its default."""
    defaults = SYNTHETIC[args.catalogue]
    given = (
        args.synthetic_items,
        args.synthetic_users,
        args.synthetic_interactions,
        args.synthetic_topics,
    )
    a, b, c, d = (g if g is not None else x for g, x in zip(given, defaults, strict=True))
    return a, b, c, d


def pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct made-up words of 2-3 syllables (a vocabulary no encoder has seen)."""
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def make_synthetic(
    n_items: int, n_users: int, n_interactions: int, n_topics: int, seed: int
) -> Any:
    """A Dataset of `n_items` items in `n_topics` topics and users who pick 1-3 topics.

    An item's text is 6 words of its topic, 2 of another topic and 4 filler words; its title is
    two of its topic words. Each user draws interactions from their topics by Dirichlet weights,
    and inside a topic with a heavy head (rank = size * U^3), so popularity is skewed as in real
    catalogues; repeats are dropped and the rest subsampled to `n_interactions`.
    """
    import pandas as pd

    from warmstart.data import from_frames

    rng = np.random.default_rng(seed)
    per_topic = 15
    vocab = np.array(pseudo_words(rng, n_topics * per_topic + 200))
    topic_words = vocab[: n_topics * per_topic].reshape(n_topics, per_topic)
    filler = vocab[n_topics * per_topic :]
    item_topic = rng.integers(n_topics, size=n_items)
    other = (item_topic + rng.integers(1, n_topics, size=n_items)) % n_topics
    own = topic_words[item_topic[:, None], rng.integers(per_topic, size=(n_items, 6))]
    mixed = topic_words[other[:, None], rng.integers(per_topic, size=(n_items, 2))]
    fill = filler[rng.integers(len(filler), size=(n_items, 4))]
    words = rng.permuted(np.concatenate([own, mixed, fill], axis=1), axis=1)
    item_ids = [f"sku-{i:06d}" for i in range(n_items)]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{a.capitalize()} {b.capitalize()}" for a, b in own[:, :2].tolist()],
            "text": [" ".join(row) for row in words.tolist()],
        }
    )

    n_fav = rng.integers(1, 4, size=n_users)
    fav = rng.integers(n_topics, size=(n_users, 3))
    weights = rng.dirichlet(np.ones(3), size=n_users)
    weights[np.arange(3)[None, :] >= n_fav[:, None]] = 0.0
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    sizes = rng.lognormal(0.0, 0.8, size=n_users)
    sizes = np.maximum(5, np.round(sizes / sizes.sum() * n_interactions * 1.3)).astype(np.int64)
    user_of = np.repeat(np.arange(n_users), sizes)
    slot = np.minimum((rng.random(len(user_of))[:, None] > cum[user_of]).sum(axis=1), 2)
    topic = fav[user_of, slot]
    order = np.argsort(item_topic, kind="stable")
    counts = np.bincount(item_topic, minlength=n_topics)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.floor(counts[topic] * rng.random(len(topic)) ** 3).astype(np.int64)
    item_of = order[starts[topic] + rank]
    pairs = np.unique(user_of * n_items + item_of)
    if len(pairs) > n_interactions:
        pairs = np.sort(rng.choice(pairs, size=n_interactions, replace=False))
    interactions = pd.DataFrame(
        {
            "user_id": (pairs // n_items).astype(np.int64),
            "item_id": np.asarray(item_ids, dtype=object)[pairs % n_items],
        }
    )
    return from_frames(
        interactions,
        items,
        item_text="{title}. {text}",
        name=f"synthetic-{n_items // 1000}k"
        if n_items < 1_000_000
        else f"synthetic-{n_items // 10**6}m",
    )


def fit_params(args: argparse.Namespace) -> dict[str, Any]:
    """What the model depends on: a saved model is reused only when these match."""
    if args.catalogue == "ml-100k":
        return {"catalogue": "ml-100k", "min_rating": 4.0, "model": {}}
    n_items, n_users, n_interactions, n_topics = synthetic_sizes(args)
    return {
        "catalogue": args.catalogue,
        "n_items": n_items,
        "n_users": n_users,
        "n_interactions": n_interactions,
        "n_topics": n_topics,
        "seed": args.seed,
        "model": {
            "encoder": "hashing",
            "cf": {"factors": 64, "iterations": 15, "regularization": 0.05, "seed": 0},
            # Chosen here, not on validation: choosing lambda_* and beta scores every validation
            # user against every item in one dense matrix (20k x 100k floats = 8 GB, copied by
            # top-k), and choosing the cold-user weights refits the whole model a second time.
            # All are non-zero so every serving path (text profile fold-in, neighbour and
            # popularity blends) runs as it would with chosen values.
            "lambda_items": 10.0,
            "lambda_users": 10.0,
            "text_profile_weight": 1.0,
            "neighbour_weight": 1.0,
            "popularity_weight": 1.0,
            **(SCALE_SETTINGS if n_items >= 1_000_000 else {}),
        },
    }


def ensure_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The model folder for --catalogue, fitted now or reused from an earlier run with the same
    parameters; returns it with a description of the data and the fit."""
    from warmstart.models.hybrid import WarmStartRecommender

    params = fit_params(args)
    model_dir = workdir / "model"
    info_path = workdir / "fit.json"
    if (model_dir / "model.json").is_file() and info_path.is_file() and not args.refit:
        info = json.loads(info_path.read_text())
        if info.get("params") == params:
            fitted = f"fitted in {info['fit_s']:.0f} s; --refit to redo"
            log(f"reusing the model in {model_dir} ({fitted})")
            return model_dir, {**info, "reused": True}
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.catalogue == "ml-100k":
        from warmstart.data import load_builtin

        data = load_builtin("ml-100k", args.data_dir)
        data = data.with_interactions(data.weights >= params["min_rating"])
        model = WarmStartRecommender()
        note = "WarmStartRecommender() defaults (MiniLM encoder, embeddings from the cache)"
    else:
        data = make_synthetic(
            params["n_items"],
            params["n_users"],
            params["n_interactions"],
            params["n_topics"],
            params["seed"],
        )
        # Own embedding cache: 100k hashed item texts do not belong in the user's cache.
        model = WarmStartRecommender(cache_dir=workdir / "embedding-cache", **params["model"])
        note = (
            "hashing encoder: MiniLM would take ~30 minutes to encode 100k item texts on this "
            "machine (~60 texts/s), and the latency under test is retrieval and scoring, which "
            "depends on catalogue size and vector width, not on the encoder that filled them"
        )
    build_s = time.perf_counter() - t0
    log(
        f"{data.name}: {data.n_users:,} users, {data.n_items:,} items, "
        f"{data.n_interactions:,} interactions (built in {build_s:.1f} s); fitting..."
    )
    t1 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t1
    model.save(model_dir)
    info = {
        "params": params,
        "dataset": {
            "name": data.name,
            "users": data.n_users,
            "items": data.n_items,
            "interactions": data.n_interactions,
        },
        "data_build_s": build_s,
        "fit_s": fit_s,
        "note": note,
        "chosen": {
            "lambda_items": model.lambda_items_,
            "lambda_users": model.lambda_users_,
            "text_profile_weight": model.text_profile_weight_,
            "neighbour_weight": model.cold_blend_.neighbour_weight,
            "popularity_weight": model.cold_blend_.popularity_weight,
        },
        "item_vector_dim": int(model.item_vectors.shape[1]),
        "encoder": model.encoder.name,
    }
    write_result(info_path, info)
    log(f"fitted in {fit_s:.0f} s; saved to {model_dir}")
    del model, data
    gc.collect()
    return model_dir, {**info, "reused": False}
