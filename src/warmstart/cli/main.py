"""`warmstart` CLI: fit, recommend, similar, info, evaluate, finetune, serve, retrain, encode and a
demo.

A `WarmstartError` (bad input, data, settings or model folder) prints one clear line and exits 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from warmstart.cli.data_options import (
    DataDirOpt,
    DatasetOpt,
    DataSpec,
    ItemColOpt,
    ItemsOpt,
    data_options,
)
from warmstart.cli.evaluate import DEFAULT_MODELS
from warmstart.data import Dataset
from warmstart.errors import ConfigError, WarmstartError
from warmstart.models import Profile, Recommendations, Recommender
from warmstart.registry import MODELS, load_model, model_class
from warmstart.text import ENCODER_NAMES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Cold-start recommendation with pretrained language models.",
)
out = Console()
err = Console(stderr=True)

EncoderOpt = Annotated[
    str, typer.Option("--encoder", help=f"text encoder: {'|'.join(ENCODER_NAMES)}")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="embedding cache (else $WARMSTART_CACHE_DIR or ~/.cache)"),
]
KOpt = Annotated[int, typer.Option("--k", min=1, max=1000, help="how many items")]
FormatOpt = Annotated[str, typer.Option("--format", help="table|json")]
ModelNameOpt = Annotated[str, typer.Option("--model-name", help=f"model: {', '.join(MODELS)}")]
FittedModelOpt = Annotated[
    Path | None, typer.Option("--model", help="a folder written by `warmstart fit`")
]


def _build(name: str, encoder: str, cache_dir: Path | None) -> Recommender:
    klass = model_class(name)
    if "encoder" in klass.Config.model_fields:
        return klass(cache_dir=cache_dir, encoder=encoder)
    return klass()


def _fit(
    spec: DataSpec,
    name: str,
    encoder: str,
    cache_dir: Path | None,
    engine: str = "local",
    address: str | None = None,
) -> Recommender:
    from warmstart.scale import executor, ray_cluster

    runner = executor(engine, address)
    model = _build(name, encoder, cache_dir)
    if runner.parallel and not hasattr(model, "set_executor"):
        raise ConfigError(f"--engine ray: {name} has no model selection to run on Ray")
    dataset = spec.load()
    err.print(
        f"[dim]{dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
        f"{dataset.n_interactions:,} interactions; fitting {name} ({encoder} encoder)...[/dim]"
    )
    for warning in dataset.text_warnings():
        err.print(f"[yellow]warning: {warning}[/yellow]", highlight=False)
    start = time.perf_counter()
    with ray_cluster(address) if runner.parallel else contextlib.nullcontext():
        if runner.parallel:
            model.set_executor(runner)  # type: ignore[attr-defined]
        model.fit(dataset)
    err.print(f"[dim]fitted in {time.perf_counter() - start:.1f} s[/dim]")
    for line in model.fit_report():
        err.print(f"[dim]chose {line}[/dim]", highlight=False)
    return model


def _model_or_fit(
    model_dir: Path | None, spec: DataSpec, name: str, encoder: str, cache_dir: Path | None
) -> Recommender:
    """A saved model, or one fitted now on the data options: exactly one of the two."""
    if model_dir is not None:
        if spec.given:
            raise ConfigError(
                "give either --model DIR or data (--dataset/--interactions), not both"
            )
        model = load_model(model_dir)
        if cache_dir is not None and hasattr(model, "cache_dir"):
            model.cache_dir = cache_dir
        return model
    if not spec.given:
        raise ConfigError(
            "give --model DIR (a fitted model) or --dataset NAME / --interactions FILE"
        )
    return _fit(spec, name, encoder, cache_dir)


def _rows(model: Recommender, recs: Recommendations, i: int, explain: Any) -> list[dict[str, Any]]:
    cat = model.catalogue
    rows = []
    for item, item_id, score in zip(recs.items[i], recs.item_ids[i], recs.scores[i], strict=True):
        if item < 0:
            continue
        rows.append(
            {
                "item_id": item_id.item() if isinstance(item_id, np.generic) else item_id,
                "title": cat.titles[item],
                "score": round(float(score), 4),
                "explanation": explain(item_id) if explain else None,
            }
        )
    return rows


EngineOpt = Annotated[
    str, typer.Option("--engine", help=r"local, or ray (needs the warmstart\[ray] extra)")
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join, e.g. 10.0.0.5:6379 (else a local Ray)"),
]


def _print(rows: list[dict[str, Any]], fmt: str, title: str, key: str = "recommendations") -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps({key: rows}, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    if any(r.get("explanation") for r in rows):
        table.add_column("why", style="dim", max_width=60)
    for n, r in enumerate(rows, 1):
        cells = [str(n), str(r["item_id"]), r["title"], f"{r['score']:.3f}"]
        if r.get("explanation"):
            cells.append(r["explanation"])
        table.add_row(*cells)
    out.print(table)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise ConfigError(f"--format must be table or json, not {fmt!r}")


@app.command()
@data_options
def fit(
    *,
    output: Annotated[Path, typer.Option("--output", help="folder to write the model to")],
    data: DataSpec,
    model_name: ModelNameOpt = "warmstart",
    encoder: EncoderOpt = "default",
    cache_dir: CacheOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
) -> None:
    """Fit a model and save it to --output (--engine ray: its model selection on Ray)."""
    model = _fit(data, model_name, encoder, cache_dir, engine, address)
    model.save(output)
    out.print(f"saved {model.name} model to {output}")


def _for_user(
    rec: Recommender, user: str, k: int, include_seen: bool
) -> tuple[list[dict[str, Any]], str]:
    recs = rec.recommend([user], k=k, exclude_seen=not include_seen)
    rows = _rows(rec, recs, 0, lambda iid: rec.explain(user, iid).summary())
    return rows, f"top {k} for user {user} ({recs.routes[0]})"


def _for_newcomer(
    rec: Recommender, profile: str | None, liked: str | None, k: int, include_seen: bool
) -> tuple[list[dict[str, Any]], str]:
    liked_ids = [s.strip() for s in liked.split(",") if s.strip()] if liked else None
    prof = Profile(text=profile, item_ids=liked_ids)
    recs = rec.recommend_for_profiles([prof], k=k, exclude_seen=not include_seen)
    rows = _rows(rec, recs, 0, lambda iid: rec.explain_profile(prof, iid).summary())
    return rows, f"top {k} for a new user: {profile or liked!r}"


@app.command()
@data_options
def recommend(
    *,
    data: DataSpec,
    model: FittedModelOpt = None,
    user: Annotated[str | None, typer.Option("--user", help="a user id from the data")] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="free text describing a new user")
    ] = None,
    liked: Annotated[
        str | None, typer.Option("--liked", help="comma-separated item ids a new user liked")
    ] = None,
    k: KOpt = 10,
    fmt: FormatOpt = "table",
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="allow items the user has seen")
    ] = False,
    model_name: ModelNameOpt = "warmstart",
    encoder: EncoderOpt = "default",
    cache_dir: CacheOpt = None,
) -> None:
    """Recommend for a user in the data (--user) or a new one (--profile TEXT and/or --liked IDS)."""
    _check_format(fmt)
    if (user is None) == (profile is None and liked is None):
        raise ConfigError("give either --user ID, or --profile TEXT and/or --liked ID,ID,...")
    rec = _model_or_fit(model, data, model_name, encoder, cache_dir)
    if user is not None:
        rows, title = _for_user(rec, user, k, include_seen)
    else:
        rows, title = _for_newcomer(rec, profile, liked, k, include_seen)
    _print(rows, fmt, title)


@app.command()
@data_options
def similar(
    *,
    data: DataSpec,
    model: FittedModelOpt = None,
    item: Annotated[str | None, typer.Option("--item", help="an item id")] = None,
    text: Annotated[str | None, typer.Option("--text", help="a description of an item")] = None,
    k: KOpt = 10,
    fmt: FormatOpt = "table",
    model_name: ModelNameOpt = "warmstart",
    encoder: EncoderOpt = "default",
    cache_dir: CacheOpt = None,
) -> None:
    """Items most similar to an item (--item ID) or to a description of a new one (--text)."""
    _check_format(fmt)
    if (item is None) == (text is None):
        raise ConfigError("give exactly one of --item ID or --text TEXT")
    rec = _model_or_fit(model, data, model_name, encoder, cache_dir)
    if item is not None:
        recs = rec.similar_items(item_ids=[item], k=k)
    else:
        recs = rec.similar_items(text=[text or ""], k=k)
    _print(_rows(rec, recs, 0, None), fmt, f"similar to {item or text!r}", key="items")


def _stats(ds: Dataset) -> dict[str, Any]:
    uc, ic = ds.user_counts(), ds.item_counts()
    return {
        "dataset": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density": round(ds.n_interactions / max(1, ds.n_users * ds.n_items), 6),
        "has_ratings": ds.has_ratings,
        "has_timestamps": ds.timestamps is not None,
        "users_without_interactions": int((uc == 0).sum()),
        "items_without_interactions": int((ic == 0).sum()),
        "median_interactions_per_user": float(np.median(uc)),
        "median_interactions_per_item": float(np.median(ic)),
        "item_text_template": ds.item_template,
        "user_text_template": ds.user_template,
        "example_item_text": next((t for t in ds.item_text if t), None),
        "example_user_text": next((t for t in ds.user_text if t), None),
        "item_text": ds.text_summary("item"),
        "user_text": ds.text_summary("user"),
        "warnings": ds.text_warnings(),
        "load_report": ds.report.to_dict(),
    }


@app.command()
@data_options
def info(*, data: DataSpec, fmt: FormatOpt = "table") -> None:
    """Statistics of a dataset and what cleaning did to it."""
    _check_format(fmt)
    ds = data.load()
    stats = _stats(ds)
    if fmt == "json":
        sys.stdout.write(json.dumps(stats, ensure_ascii=False, indent=2) + "\n")
        return
    table = Table(title=f"dataset {ds.name}", title_justify="left", show_header=False)
    for key, value in stats.items():
        table.add_row(key, str(value))
    out.print(table)


@app.command()
@data_options
def evaluate(
    *,
    protocol: Annotated[
        str, typer.Option("--protocol", help="cold-item | cold-user | warm | temporal")
    ],
    data: DataSpec,
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="comma-separated models to compare",
            # Spaced, so a narrow terminal wraps the list instead of cutting it.
            show_default=", ".join(DEFAULT_MODELS),
        ),
    ] = ",".join(DEFAULT_MODELS),
    k: Annotated[str, typer.Option("--k", help="cut-offs, comma-separated")] = "10,20,50",
    split: Annotated[
        str, typer.Option("--split", help="cold-item split: random | dropoutnet (citeulike-a)")
    ] = "random",
    cold_items: Annotated[
        Path | None, typer.Option("--cold-items", help="file of cold item ids, one a line")
    ] = None,
    fewshot: Annotated[
        str, typer.Option("--fewshot", help="cold-user: revealed items per segment")
    ] = "0,1,3,5",
    seed: Annotated[int, typer.Option("--seed", help="random seed of the split")] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", help="results JSON; PNG plots go beside it")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=100, help="bootstrap resamples for the 95% CI")
    ] = 1000,
    encoder: EncoderOpt = "default",
    cache_dir: CacheOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
) -> None:
    """Benchmark models side by side on a cold-item, cold-user, warm or temporal split."""
    from warmstart.cli.evaluate import check_protocol, parse_ints, parse_models
    from warmstart.cli.evaluate import evaluate as run_evaluate
    from warmstart.eval.report import markdown_table

    check_protocol(protocol)
    payload = run_evaluate(
        data,
        protocol=protocol,
        models=parse_models(models),
        ks=parse_ints(k, "--k"),
        split=split,
        cold_items=cold_items,
        fewshot=parse_ints(fewshot, "--fewshot"),
        seed=seed,
        encoder=encoder,
        cache_dir=cache_dir,
        output=output,
        n_bootstrap=bootstrap,
        engine=engine,
        address=address,
        progress=err.is_terminal,
        log=lambda line: err.print(f"[dim]{line}[/dim]", highlight=False),
    )
    sys.stdout.write(markdown_table(payload) + "\n")


@app.command()
@data_options
def finetune(
    *,
    output: Annotated[
        Path, typer.Option("--output", help="folder for checkpoints and the encoder")
    ],
    data: DataSpec,
    objective: Annotated[
        str | None,
        typer.Option("--objective", help="contrastive | alignment | rating | click"),
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="lora | top | full")] = None,
    layers: Annotated[
        int | None, typer.Option("--layers", min=1, help="top layers that train (default 2)")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="passes over the items")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="stop after this many steps")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=2)] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="default: LoRA 2e-4 contrastive/click, 5e-4 alignment/rating; 5e-5 top/full",
        ),
    ] = None,
    mlm_epochs: Annotated[
        int | None,
        typer.Option("--mlm-epochs", min=0, help="masked-LM passes over the item texts first"),
    ] = None,
    hard_negatives: Annotated[
        bool | None,
        typer.Option(
            "--hard-negatives/--no-hard-negatives",
            help="contrastive: add the CF model's near misses as negatives",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="go on from the checkpoint in --output")
    ] = False,
) -> None:
    """Fine-tune the text encoder on the interactions; Ctrl-C keeps the last epoch's checkpoint."""
    from warmstart.cli.finetune import export, finetune_config, train
    from warmstart.finetune.trainer import resumable_checkpoint

    if not data.given:
        raise ConfigError("give --dataset NAME or --interactions FILE to fine-tune on")
    cfg = finetune_config(
        objective=objective, method=method, layers=layers, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        hard_negatives=hard_negatives, mlm_epochs=mlm_epochs,
    )  # fmt: skip
    if resume:  # before any data is read
        resumable_checkpoint(output, cfg)
    result = train(data.load(), cfg, output, resume=resume, console=err)
    out.print(export(result, output))


@app.command()
def serve(
    *,
    model: Annotated[Path, typer.Option("--model", help="a saved warmstart or warmstart-ft model")],
    db: Annotated[
        str, typer.Option("--db", help="sqlite:///path.db (default) or postgresql://...")
    ] = "sqlite:///warmstart.db",
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="processes behind the one port, each following the store"
        ),
    ] = 1,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="a key clients send as Bearer (repeatable)"),
    ] = None,
    admin_key: Annotated[
        list[str] | None,
        typer.Option("--admin-key", help="a key that may also reload models and run experiments"),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug|info|warning")] = "info",
    neighbour_weight: Annotated[
        float | None,
        typer.Option(
            "--neighbour-weight", min=0, help="newcomers: weight of clicked items' neighbours"
        ),
    ] = None,
    popularity_weight: Annotated[
        float | None,
        typer.Option(
            "--popularity-weight", min=0, help="newcomers: weight of the popularity prior"
        ),
    ] = None,
    popularity_fade: Annotated[
        float | None,
        typer.Option(
            "--popularity-fade",
            min=0,
            max=1,
            help="newcomers: share of the popularity prior kept per event (0: gone after one)",
        ),
    ] = None,
    index_cache: Annotated[
        Path | None,
        typer.Option(
            "--index-cache",
            help="folder for built HNSW graphs, reused on restart (else the warmstart cache)",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, help="larger request bodies get 413")
    ] = 4 * 1024 * 1024,
    header_timeout: Annotated[
        float,
        typer.Option("--header-timeout", min=0.1, help="seconds a client has to send headers"),
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", min=0.1, help="seconds a client has to send a body")
    ] = 60.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="open connections; beyond, 503")
    ] = 1000,
    read_threads: Annotated[
        int | None,
        typer.Option(
            "--read-threads",
            min=1,
            help="recommendation reads at once per worker, more wait [default: cores / workers]",
        ),
    ] = None,
    text_cache_mib: Annotated[
        int,
        typer.Option("--text-cache-mib", min=1, help="memory for cached visitor text vectors"),
    ] = 64,
    query_encoder: Annotated[
        str,
        typer.Option(
            "--query-encoder",
            help="visitors' sentences: auto (int8 ONNX MiniLM if it agrees and is faster) | fp32",
        ),
    ] = "auto",
) -> None:
    """Serve recommendations over HTTP; keys from --api-key or $WARMSTART_API_KEYS (comma-separated).

    Admin keys (--admin-key, $WARMSTART_ADMIN_KEYS) may also reload models and run experiments.
    /healthz answers as soon as the server listens; /readyz says 503 until the model, its
    indexes and the text encoder are loaded.
    """
    from warmstart.cli import serve as serving

    keys = serving.keys(api_key, "WARMSTART_API_KEYS")
    if not keys:
        raise typer.BadParameter(
            "give at least one API key: --api-key KEY, or WARMSTART_API_KEYS=KEY1,KEY2",
            param_hint="--api-key",
        )
    level = serving.log_level(log_level)
    logging.getLogger("warmstart").setLevel(level.upper())
    settings = serving.settings(
        {
            "model_dir": model,
            "db_url": db,
            "api_keys": keys,
            "admin_keys": serving.keys(admin_key, "WARMSTART_ADMIN_KEYS"),
            "neighbour_weight": neighbour_weight,
            "popularity_weight": popularity_weight,
            "popularity_fade": popularity_fade,
            "index_cache": index_cache,
            "max_body_bytes": max_body_bytes,
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
            "read_threads": read_threads,
            "text_cache_bytes": text_cache_mib * 2**20,
            "query_encoder": query_encoder,
        }
    )
    if not serving.run(settings, host=host, port=port, level=level, workers=workers):
        raise WarmstartError(f"the model at {model} could not be served (the log above says why)")


@app.command()
def retrain(
    *,
    db: Annotated[str, typer.Option("--db", help="the service's database URL")],
    model: Annotated[Path, typer.Option("--model", help="the model the service runs")],
    output: Annotated[Path, typer.Option("--output", help="where to write the new model")],
) -> None:
    """A new model version from the served model and the stored events, items and users.

    Then `POST /v1/admin/reload {"model": OUTPUT}`, or retrain into the served folder itself
    (--output = --model; it is replaced only when complete) and send the server SIGHUP.
    """
    from warmstart.serve.retrain import retrain as run_retrain

    start = time.perf_counter()
    folder, last = run_retrain(model, db, output)
    out.print(
        f"retrained on events through #{last} in {time.perf_counter() - start:.1f} s: {folder}"
    )


@app.command()
def encode(
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", help="embedding cache to fill (else $WARMSTART_CACHE_DIR or ~/.cache)"
        ),
    ] = None,
    items: ItemsOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    item_col: ItemColOpt = "item_id",
    text: Annotated[
        str | None, typer.Option("--text", help='text template, e.g. "{title}. {plot}"')
    ] = None,
    encoder: EncoderOpt = "default",
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    actors: Annotated[int, typer.Option("--actors", min=1, help="Ray encoder actors")] = 1,
    cpus_per_actor: Annotated[
        float, typer.Option("--cpus-per-actor", min=0.01, help="CPUs (and threads) per actor")
    ] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="texts per batch")] = 64,
    block_size: Annotated[
        int, typer.Option("--block-size", min=1, help="texts per written shard")
    ] = 4096,
    fmt: FormatOpt = "table",
) -> None:
    """Encode a catalogue's item texts into the embedding cache, so fit and serve reuse them.

    Only texts the cache lacks are encoded; a stopped run, run again, does what is left.
    """
    from warmstart.scale import encode_items, encode_texts

    _check_format(fmt)
    if (items is None) == (dataset is None):
        raise ConfigError("give either --items FILE or --dataset NAME")
    if items is not None:
        report = encode_items(
            items,
            encoder,
            output,
            item_col=item_col,
            text=text,
            engine=engine,
            address=address,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            batch_size=batch_size,
            block_size=block_size,
        )
    else:
        if text is not None:
            raise ConfigError("--text applies to --items; a built-in dataset has its own")
        ds = DataSpec(dataset=dataset, data_dir=data_dir).load()
        report = encode_texts(
            ds.item_text,
            encoder,
            output,
            engine=engine,
            address=address,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            batch_size=batch_size,
            block_size=block_size,
            item_ids=[str(i) for i in ds.item_ids.external] if ds.item_text else None,
        )
    if fmt == "json":
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        return
    table = Table(title="encoded", title_justify="left", show_header=False)
    for key, value in report.as_dict().items():
        table.add_row(key, str(value))
    out.print(table)


@app.command()
def demo(
    *,
    data_dir: DataDirOpt = None,
    cache_dir: CacheOpt = None,
    k: KOpt = 8,
) -> None:
    """Fit on ML-100K and show cold users (English, Chinese), a warm user, a new item, an explanation."""
    from warmstart.cli.demo import run_demo

    run_demo(out, data_dir=data_dir, cache_dir=cache_dir, k=k)


def _show_usage_error(exc: typer.TyperException) -> None:
    """Click's own rendering (usage line, then the error) where the exception has one."""
    show = getattr(exc, "show", None)
    if callable(show):
        show()
    else:
        err.print(f"[red]error:[/red] {exc.format_message()}", highlight=False)


def main() -> None:
    """Console entry point: expected errors are one line on stderr and a non-zero exit code.

    Only `WarmstartError` (raised on purpose, with a message for the user) and typer's usage
    errors and exits are caught: anything else is a bug, and its traceback is what to report.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)
    except WarmstartError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        raise SystemExit(130) from None
    except typer.TyperException as exc:  # typer's click: UsageError, BadParameter, ...
        _show_usage_error(exc)
        raise SystemExit(exc.exit_code) from None
    if isinstance(code, int) and code:  # typer returns, rather than raises, a command's Exit
        raise SystemExit(code)


if __name__ == "__main__":
    main()
