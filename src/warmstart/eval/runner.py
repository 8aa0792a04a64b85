"""Run several models on one split, one after another here or side by side on Ray, and measure
them the same way."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from warmstart._progress import tqdm
from warmstart.data.dataset import Dataset
from warmstart.eval.splits import Segment, Split
from warmstart.index.exact import topk
from warmstart.metrics import (
    AUC,
    MAE,
    RMSE,
    Coverage,
    bootstrap_ci,
    paired_test,
    ranking_metrics,
)
from warmstart.models.base import ProfileQuery, Recommender
from warmstart.models.textaware import TextAware
from warmstart.scale import executor
from warmstart.text import TextEncoder

log = logging.getLogger(__name__)

_CHUNK = 512


@dataclass
class SegmentResult:
    """One model on one segment: mean metrics, intervals, and the per-user values behind them."""

    model: str
    segment: str
    n_users: int
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    per_user: dict[str, np.ndarray]
    fit_seconds: float
    recommend_seconds: float
    p_value: dict[str, float | None] = field(default_factory=dict)
    best_other: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "segment": self.segment,
            "n_users": self.n_users,
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "ci95": {k: [_round(lo), _round(hi)] for k, (lo, hi) in self.ci95.items()},
            "p_value": {
                k: (None if v is None else float(f"{v:.3g}")) for k, v in self.p_value.items()
            },
            "best_other": self.best_other,
            "fit_seconds": round(self.fit_seconds, 3),
            "recommend_seconds": round(self.recommend_seconds, 3),
        }


def _round(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: its report name and a factory building a fresh, unfitted instance."""

    name: str
    build: Callable[[], Recommender]


def score_segment(
    model: Recommender, segment: Segment, users_text: Sequence[str | None], rows: np.ndarray
) -> np.ndarray:
    """Unranked scores of the segment's users `rows`, by the route the segment prescribes."""
    users = segment.users[rows]
    if segment.revealed is None:
        scores, _ = model.score_users(users)
        return scores
    queries = [
        ProfileQuery(text=None, attribute_text=users_text[int(u)], items=segment.revealed[j])
        for u, j in zip(users, rows, strict=True)
    ]
    return model.score_profiles(queries)


def evaluate_segment(
    model: Recommender,
    segment: Segment,
    dataset: Dataset,
    ks: Sequence[int],
    *,
    seed: int = 0,
    ratings: sp.csr_matrix | None = None,
    calibration: tuple[float, float, float, float] | None = None,
    progress: bool = True,
    desc: str = "",
) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    """Per-user metric values, catalogue-level values (coverage) and the seconds spent scoring.

    Candidate columns are visited in a fixed random order before the top-k, so models that tie
    many items (popularity on cold items, say) are not flattered by id order.
    """
    n_items = dataset.n_items
    candidates = np.arange(n_items) if segment.candidates is None else segment.candidates
    cols = np.random.default_rng(seed).permutation(candidates)
    kmax = max(ks)
    metrics = ranking_metrics(ks)
    per_user: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    per_user["auc"] = []
    rating_pred: list[np.ndarray] = []
    rating_true: list[np.ndarray] = []
    rating_user: list[np.ndarray] = []
    reco_all: list[np.ndarray] = []
    users_text = dataset.user_texts()
    seconds = 0.0
    chunks = range(0, segment.n_users, _CHUNK)
    for start in tqdm(chunks, desc=desc, disable=not progress, leave=False, unit="chunk"):
        rows = np.arange(start, min(start + _CHUNK, segment.n_users))
        t0 = time.perf_counter()
        scores = np.asarray(score_segment(model, segment, users_text, rows), dtype=np.float32)
        if np.isnan(scores).any():
            raise FloatingPointError(f"{desc}: the model produced NaN scores")
        raw = scores
        scores = scores[:, cols].copy()
        excl = segment.exclude[rows][:, cols].tocoo()
        scores[excl.row, excl.col] = -np.inf
        ids, _ = topk(scores, kmax, copy=False)
        seconds += time.perf_counter() - t0
        reco = np.where(ids >= 0, cols[np.maximum(ids, 0)], -1)
        reco_all.append(reco)
        truth = segment.truth[rows]
        for m in metrics:
            per_user[m.name].append(m.calc_per_user(reco, truth))
        per_user["auc"].append(AUC().calc_per_user(scores, truth[:, cols].tocsr()))
        if ratings is not None and calibration is not None:
            r = ratings[segment.users[rows]].multiply(truth).tocoo()
            a, b, lo, hi = calibration
            rating_pred.append(np.clip(a + b * raw[r.row, r.col], lo, hi))
            rating_true.append(r.data.astype(np.float64))
            rating_user.append(rows[r.row])
    values = {k: np.concatenate(v) for k, v in per_user.items()}
    if rating_pred:
        pred, true, who = (np.concatenate(x) for x in (rating_pred, rating_true, rating_user))
        if true.size:
            values["rmse"] = RMSE().calc_per_user(pred, true, who)
            values["mae"] = MAE().calc_per_user(pred, true, who)
    reco_cat = np.vstack(reco_all) if reco_all else np.empty((0, kmax), np.int64)
    whole = {Coverage(k).name: Coverage(k).calc(reco_cat, len(candidates)) for k in ks}
    return values, whole, seconds


def rating_calibration(
    model: Recommender, train: Dataset, seed: int = 0
) -> tuple[float, float, float, float]:
    """Least-squares map score -> rating on training ratings, so ranking models get an RMSE.

    Returns (intercept, slope, lowest, highest rating): predictions are clipped to the scale.

    Ranking models do not predict ratings; a linear calibration on interactions they trained on
    is the kindest honest reading of their scores as ratings.
    """
    rng = np.random.default_rng(seed)
    users = np.flatnonzero(train.user_counts() > 0)
    users = rng.choice(users, size=min(len(users), 1000), replace=False)
    scores, _ = model.score_users(users)
    m = train.matrix()[users].tocoo()
    x = scores[m.row, m.col].astype(np.float64)
    y = m.data.astype(np.float64)
    if y.size == 0:
        return 0.0, 0.0, -np.inf, np.inf
    lo, hi = float(y.min()), float(y.max())
    if x.size < 2 or np.ptp(x) == 0:
        return float(y.mean()), 0.0, lo, hi
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b), lo, hi


def run(
    dataset: Dataset,
    split: Split,
    models: Sequence[ModelSpec],
    ks: Sequence[int] = (10, 20, 50),
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    progress: bool = True,
    on_model_done: Callable[[str, list[SegmentResult]], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    encoder: TextEncoder | None = None,
) -> list[SegmentResult]:
    """Fit every model on the split's training data and evaluate it on every segment.

    `engine="ray"`: each model is a Ray task on the cluster at `address` (default: a Ray
    started for the run), the dataset and split shipped once through the object store. The
    results come in the same order as one after another here, and are the same to the bit
    where both run one BLAS thread (README, "On a Ray cluster"). `encoder`, when
    given, is what text-aware models encode with (on Ray: a `FrozenEncoder`, so that no task
    encodes the catalogue again).
    """
    ratings = dataset.matrix().tocsr() if dataset.has_ratings else None
    common = {
        "dataset": dataset,
        "split": split,
        "ks": tuple(ks),
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "ratings": ratings,
        "encoder": encoder,
    }
    runner = executor(engine, address)
    # Progress bars from tasks running side by side would only garble each other.
    common["progress"] = progress and not runner.parallel
    by_model: dict[int, list[SegmentResult]] = {}
    for i, mine in runner.map(evaluate_model, models, common):
        by_model[i] = mine
        if on_model_done is not None:
            on_model_done(models[i].name, mine)
    results = [r for i in range(len(models)) for r in by_model[i]]
    _compare(results)
    return results


def evaluate_model(
    spec: ModelSpec,
    *,
    dataset: Dataset,
    split: Split,
    ks: Sequence[int],
    seed: int,
    n_bootstrap: int,
    ratings: sp.csr_matrix | None,
    encoder: TextEncoder | None,
    progress: bool,
) -> list[SegmentResult]:
    """One model: fitted on the split's training data, then measured on every segment."""
    model = spec.build()
    if encoder is not None and isinstance(model, TextAware):
        model.set_encoder(encoder)
    log.info("fitting %s", spec.name)
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_seconds = time.perf_counter() - t0
    calibration = rating_calibration(model, split.train, seed) if ratings is not None else None
    mine: list[SegmentResult] = []
    for segment in split.segments:
        values, whole, seconds = evaluate_segment(
            model,
            segment,
            dataset,
            ks,
            seed=seed,
            ratings=ratings,
            calibration=calibration,
            progress=progress,
            desc=f"{spec.name} [{segment.name}]",
        )
        means = {k: float(np.nanmean(v)) if v.size else float("nan") for k, v in values.items()}
        ci = {k: bootstrap_ci(v, n_resamples=n_bootstrap, seed=seed) for k, v in values.items()}
        mine.append(
            SegmentResult(
                model=spec.name,
                segment=segment.name,
                n_users=segment.n_users,
                metrics={**means, **whole},
                ci95=ci,
                per_user=values,
                fit_seconds=fit_seconds,
                recommend_seconds=seconds,
            )
        )
    del model
    gc.collect()
    return mine


def _compare(results: list[SegmentResult]) -> None:
    """For each result and metric: p-value of a paired test against the best other model."""
    lower_is_better = {"rmse", "mae"}
    for segment in {r.segment for r in results}:
        group = [r for r in results if r.segment == segment]
        for r in group:
            for metric, values in r.per_user.items():
                others = [o for o in group if o is not r and metric in o.per_user]
                if not others:
                    continue
                sign = -1.0 if metric in lower_is_better else 1.0
                best = max(others, key=lambda o: _key(sign * o.metrics[metric]))
                r.best_other[metric] = best.model
                r.p_value[metric] = (
                    paired_test(values, best.per_user[metric])
                    if len(values) == len(best.per_user[metric])
                    else None
                )


def _key(value: float) -> float:
    return value if np.isfinite(value) else -np.inf
