"""`warmstart evaluate`: one split, every model measured the same way (here or on Ray), a JSON
file, a table, plots."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from warmstart import __version__
from warmstart._io import write_json
from warmstart.cli.data_options import DataSpec
from warmstart.data.builtin import citeulike_dropoutnet_split
from warmstart.data.dataset import Dataset
from warmstart.errors import ConfigError, DataError
from warmstart.eval.runner import ModelSpec, SegmentResult, run
from warmstart.eval.splits import (
    PROTOCOLS,
    Split,
    cold_item_split,
    cold_user_split,
    dropoutnet_items,
    read_id_file,
    warm_split,
)
from warmstart.models import Recommender
from warmstart.registry import MODELS, model_class
from warmstart.scale import check_engine
from warmstart.text import FrozenEncoder, encoder_from_name

DEFAULT_MODELS: tuple[str, ...] = (
    "random",
    "popularity",
    "als",
    "item-knn",
    "content-knn",
    "lightfm",
    "dropoutnet",
    "warmstart",
)
SPLITS: tuple[str, ...] = ("random", "dropoutnet")


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """'10,20,50' -> (10, 20, 50), with an error naming the option."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} needs at least one value")
    return values


def parse_models(text: str) -> tuple[str, ...]:
    """'als,warmstart' -> ('als', 'warmstart'), each a known model, duplicates dropped."""
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ConfigError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'} in --models; known: "
            f"{', '.join(MODELS)}"
        )
    return tuple(dict.fromkeys(names))


def check_protocol(protocol: str) -> None:
    """Before any data is read: a typo should not cost a dataset load."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown --protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def build_split(
    dataset: Dataset,
    protocol: str,
    *,
    split: str = "random",
    cold_items: Path | None = None,
    fewshot: Sequence[int] = (0, 1, 3, 5),
    seed: int = 0,
    data_dir: Path | None = None,
) -> Split:
    """The protocol's split of `dataset`; named fixed splits only where they exist."""
    check_protocol(protocol)
    if split not in SPLITS:
        raise ConfigError(f"unknown --split {split!r}; choose from {', '.join(SPLITS)}")
    if (split != "random" or cold_items is not None) and protocol != "cold-item":
        raise ConfigError("--split and --cold-items apply to --protocol cold-item only")
    if protocol == "cold-item":
        if split == "dropoutnet":
            if dataset.name != "citeulike-a":
                raise ConfigError("--split dropoutnet exists for --dataset citeulike-a only")
            if cold_items is not None:
                raise ConfigError("give --split dropoutnet or --cold-items FILE, not both")
            parts = dropoutnet_items(citeulike_dropoutnet_split(data_dir), dataset)
            return cold_item_split(
                dataset, test_items=parts["test"], validation_items=parts["vali"], seed=seed
            )
        test_items = read_id_file(cold_items, dataset) if cold_items is not None else None
        return cold_item_split(dataset, test_items=test_items, seed=seed)
    if protocol == "cold-user":
        return cold_user_split(dataset, fewshot=fewshot, seed=seed)
    return warm_split(dataset, seed=seed, temporal=protocol == "temporal")


def model_specs(
    names: Sequence[str], encoder: str, cache_dir: Path | None, seed: int
) -> list[ModelSpec]:
    """Factories for fresh models; text-aware ones share one encoder (and its cache)."""
    shared: dict[str, Any] = {}

    def factory(name: str) -> Callable[[], Recommender]:
        def build() -> Recommender:
            klass = model_class(name)
            fields = klass.Config.model_fields
            params: dict[str, Any] = {}
            if "seed" in fields:
                params["seed"] = seed
            if "encoder" not in fields:
                return klass(**params)
            model = klass(cache_dir=cache_dir, encoder=encoder, **params)
            if "encoder" not in shared:
                shared["encoder"] = encoder_from_name(encoder, cache_dir=cache_dir)
            model.set_encoder(shared["encoder"])  # type: ignore[attr-defined]
            return model

        return build

    return [ModelSpec(name, factory(name)) for name in names]


def machine() -> dict[str, Any]:
    """Where the figures were measured, recorded with them."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "warmstart": __version__,
    }


def evaluate(
    spec: DataSpec,
    *,
    protocol: str,
    models: Sequence[str] = DEFAULT_MODELS,
    ks: Sequence[int] = (10, 20, 50),
    split: str = "random",
    cold_items: Path | None = None,
    fewshot: Sequence[int] = (0, 1, 3, 5),
    seed: int = 0,
    encoder: str = "default",
    cache_dir: Path | None = None,
    output: Path | None = None,
    n_bootstrap: int = 1000,
    progress: bool = True,
    log: Callable[[str], None] = print,
    engine: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark; write `output` (JSON) and PNG plots beside it; return the payload.

    `engine="ray"` runs each model as a Ray task (`eval.runner.run`); text-aware models get
    the catalogue's vectors, encoded once here, through the object store.
    """
    check_protocol(protocol)
    check_engine(engine)
    if min(ks) < 1:
        raise ConfigError("--k values must be >= 1")
    dataset = spec.load()
    split_obj = testable_split(
        dataset,
        protocol,
        split=split,
        cold_items=cold_items,
        fewshot=fewshot,
        seed=seed,
        data_dir=spec.data_dir,
        log=log,
    )
    start = time.perf_counter()
    shipped = None
    if engine == "ray" and any("encoder" in model_class(m).Config.model_fields for m in models):
        texts = [*dataset.item_text, *dataset.user_text]
        shipped = FrozenEncoder.of(encoder_from_name(encoder, cache_dir), texts, encoder)
    results = run(
        dataset,
        split_obj,
        model_specs(models, encoder, cache_dir, seed),
        ks,
        seed=seed,
        n_bootstrap=n_bootstrap,
        progress=progress,
        on_model_done=model_logger(primary_metric(protocol, ks), log),
        engine=engine,
        address=address,
        encoder=shipped,
    )
    payload = record(
        dataset,
        split_obj,
        results,
        protocol=protocol,
        split=split if cold_items is None else str(cold_items),
        seed=seed,
        ks=ks,
        encoder=encoder,
        models=models,
        seconds=time.perf_counter() - start,
        engine=engine,
    )
    if output is not None:
        write_results(payload, output, log)
    return payload


def testable_split(
    dataset: Dataset,
    protocol: str,
    *,
    split: str,
    cold_items: Path | None,
    fewshot: Sequence[int],
    seed: int,
    data_dir: Path | None,
    log: Callable[[str], None],
) -> Split:
    """`build_split`, logged, without the segments that hold no test user (nothing to score)."""
    split_obj = build_split(
        dataset,
        protocol,
        split=split,
        cold_items=cold_items,
        fewshot=fewshot,
        seed=seed,
        data_dir=data_dir,
    )
    log(
        f"{dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
        f"{dataset.n_interactions:,} interactions; protocol {protocol}; "
        + "; ".join(split_obj.notes)
    )
    for s in split_obj.segments:
        log(f"segment {s.name}: {s.n_users:,} users, {int(s.truth.nnz):,} test interactions")
    kept = tuple(s for s in split_obj.segments if s.n_users > 0)
    if not kept:
        raise DataError(
            f"the {protocol} split left no test user with a test interaction the models could "
            "know about; is the dataset large enough (or, for temporal, do late users also "
            "appear early)?"
        )
    return dataclasses.replace(split_obj, segments=kept)


def model_logger(
    metric: str, log: Callable[[str], None]
) -> Callable[[str, list[SegmentResult]], None]:
    """A line per model as it finishes: its times and `metric` per segment."""

    def done(name: str, rs: list[SegmentResult]) -> None:
        summary = ", ".join(
            f"{r.segment} {metric} {r.metrics.get(metric, float('nan')):.4f}" for r in rs
        )
        log(
            f"{name}: fit {rs[0].fit_seconds:.1f} s, recommend "
            f"{sum(r.recommend_seconds for r in rs):.1f} s; {summary}"
        )

    return done


def record(
    dataset: Dataset,
    split_obj: Split,
    results: Sequence[SegmentResult],
    *,
    protocol: str,
    split: str,
    seed: int,
    ks: Sequence[int],
    encoder: str,
    models: Sequence[str],
    seconds: float,
    engine: str = "local",
) -> dict[str, Any]:
    """The run as JSON: what was compared, on what, where, and every model's results."""
    return {
        "dataset": dataset.name,
        "protocol": protocol,
        "split": split,
        "seed": seed,
        "ks": list(ks),
        "primary_metric": primary_metric(protocol, ks),
        "encoder": encoder,
        "models": list(models),
        "segments": {
            s.name: {"n_users": s.n_users, "n_test_interactions": int(s.truth.nnz)}
            for s in split_obj.segments
        },
        "notes": list(split_obj.notes),
        "total_seconds": round(seconds, 1),
        "engine": engine,
        "machine": machine(),
        "results": [r.to_dict() for r in results],
    }


def write_results(payload: dict[str, Any], output: Path, log: Callable[[str], None]) -> None:
    """The JSON at `output` and the plots beside it (`output` without its suffix, + .png)."""
    write_json(output, payload)
    from warmstart.eval.report import plot_all

    stem = output.with_suffix("")
    for path in plot_all(payload, stem):
        log(f"wrote {path}")
    log(f"wrote {output}")


def primary_metric(protocol: str, ks: Sequence[int]) -> str:
    """The headline metric: recall@20 for cold items (the field's convention), else NDCG@10."""
    if protocol == "cold-item":
        k = 20 if 20 in ks else max(ks)
        return f"recall@{k}"
    k = 10 if 10 in ks else min(ks)
    return f"ndcg@{k}"
