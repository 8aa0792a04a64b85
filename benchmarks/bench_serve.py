"""Load benchmark of `warmstart serve` over loopback: latency per route and request rate, and how
soon a new item shows up in results.

Fits a model (or reuses one from --workdir), starts `warmstart serve` as a subprocess on a fresh
SQLite database, and drives it from this process with an open-loop load generator: request i is
due at t0 + i/rate whatever happened to earlier ones, and its latency is measured from that due
time, so a stalled server shows up as latency, not as fewer requests (no coordinated omission).
A few worker threads, each with its own keep-alive connection, send the requests.

    .venv/bin/python benchmarks/bench_serve.py --catalogue ml-100k
    .venv/bin/python benchmarks/bench_serve.py --catalogue synthetic-100k

Catalogues:
  ml-100k         `WarmStartRecommender()` (MiniLM) on ML-100K ratings >= 4, as
                  `warmstart fit --dataset ml-100k --min-rating 4` builds it (1,682 items)
  synthetic-100k  100,000 items described by topic words, ~20,000 users, ~1M interactions drawn
                  by topic, fitted with the model-free `hashing` encoder
  synthetic-1m    the same at 1,000,000 items in 1,000 topics, ~50,000 users, ~2M interactions

Routes (each at every --rates value): healthz (the client + HTTP floor), warm users, text-only
users, few-shot users (3 clicks), anonymous visitors with text (from a pool of texts, and with a
new text on every request), with and without explanations. Then freshness: POST /v1/items, and
poll POST /v1/recommendations with the item's text until the item is in the top 10, idle and
under warm load. Last, an in-process profile of `Engine` calls on the same model.

Writes --output (default runs/serve-<catalogue>.json) and a PNG of p50/p99 against rate beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, importable, log, machine_info, write_result
from serve_bench import TARGET_P99_MS, TARGET_RATE
from serve_bench.catalogue import SYNTHETIC, ensure_model
from serve_bench.inprocess import inprocess_profile
from serve_bench.load import TRANSPORTS
from serve_bench.measure import measure, measure_freshness, save
from serve_bench.report import plot, print_summary
from serve_bench.routes import ALL_ROUTES, build_routes
from serve_bench.server import auth_headers, idle_usage, serving, wait_quiet, wait_workers

VERSIONS = ("numpy", "fastapi", "starlette", "uvicorn", "pydantic", "httpx", "usearch")


def machine_info_with_speedups() -> dict[str, Any]:
    """The shared machine fields, the serving stack's versions, and which of uvicorn's optional
    speed-ups are installed (they change what the server's event loop and parser cost)."""
    loops = [m for m in ("uvloop", "httptools") if importable(m)]
    return {**machine_info(VERSIONS), "uvicorn_speedups_installed": loops}


def profile_in_subprocess(args: argparse.Namespace, model_dir: Path, tmp: Path) -> dict[str, Any]:
    """`inprocess_profile` in a fresh interpreter: a native crash there (or its memory) cannot
    take the load results with it, and its imports cannot change the order the server's had."""
    out = tmp / "inprocess.json"
    cmd = [
        sys.executable,
        "-X",
        "faulthandler",
        str(Path(__file__).resolve()),
        "--catalogue",
        args.catalogue,
        "--profile-only",
        str(model_dir),
        "--profile-reps",
        str(args.profile_reps),
        "--seed",
        str(args.seed),
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-4000:]}
    return dict(json.loads(out.read_text()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--catalogue", choices=("ml-100k", *SYNTHETIC), default="ml-100k")
    p.add_argument("--rates", default="50,100,200", help="requests/s, comma-separated")
    p.add_argument("--seconds", type=float, default=25.0, help="measured seconds per warm run")
    p.add_argument(
        "--route-seconds", type=float, default=10.0, help="measured seconds per other-route run"
    )
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each run")
    p.add_argument("--grace", type=float, default=5.0, help="seconds past the schedule to drain")
    p.add_argument(
        "--repeats", type=int, default=1, help="runs of each route and rate (spread of p99)"
    )
    p.add_argument("--routes", default=",".join(ALL_ROUTES), help="which request mixes to run")
    p.add_argument("--workers", type=int, default=16, help="client threads (one connection each)")
    p.add_argument("--client", choices=tuple(TRANSPORTS), default="stdlib")
    p.add_argument("--pool", type=int, default=200, help="text-only users, few-shot users, texts")
    p.add_argument("--freshness-trials", type=int, default=20)
    p.add_argument("--profile-reps", type=int, default=200, help="0 skips the in-process profile")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (e.g. OPENBLAS_NUM_THREADS=1); repeatable",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="extra `warmstart serve` option (e.g. --server-arg=--query-encoder=fp32); repeatable",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where the fitted model is kept")
    p.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="`warmstart serve --workers N` (server CPU figures then count only the parent)",
    )
    p.add_argument("--refit", action="store_true", help="fit even if --workdir has the model")
    p.add_argument("--fit-only", action="store_true", help="fit (or find) the model and stop")
    p.add_argument("--profile-only", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--synthetic-items", type=int, default=None)
    p.add_argument("--synthetic-users", type=int, default=None)
    p.add_argument("--synthetic-interactions", type=int, default=None)
    p.add_argument("--synthetic-topics", type=int, default=None)
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes to go quiet",
    )
    p.add_argument(
        "--quiet-threshold", type=float, default=0.3, help="cores others may use to count as quiet"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="reruns of a run during which others used more than --quiet-threshold cores",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import httpx

    args = parse_args(argv)
    wall0 = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Client threads waking on schedule should not wait the default 5 ms for the GIL.
    sys.setswitchinterval(0.001)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    wanted = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = set(wanted) - set(ALL_ROUTES)
    if unknown:
        raise SystemExit(f"unknown routes {sorted(unknown)}; choose from {', '.join(ALL_ROUTES)}")
    output = args.output or Path(f"runs/serve-{args.catalogue}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "warmstart-bench-serve" / args.catalogue
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    rng = np.random.default_rng(args.seed)
    if args.profile_only is not None:
        with tempfile.TemporaryDirectory(prefix="bench-serve-profile-") as tmp_name:
            out = inprocess_profile(args.profile_only, Path(tmp_name), args.profile_reps, rng)
        write_result(output, out)
        return

    result: dict[str, Any] = {
        "benchmark": "serve",
        "catalogue": args.catalogue,
        "command": command_line(),
        "machine": machine_info_with_speedups(),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
        },
        "method": (
            "open loop: request i is due at t0 + i/rate; latency = completion - due time, so "
            "time spent waiting for a free client worker or a busy server counts; the first "
            f"{args.warmup:g} s of each run are sent but not measured; client and server share "
            "this machine's cores over loopback"
        ),
    }
    t0 = time.perf_counter()
    model_dir, fit_info = ensure_model(args, workdir)
    result["fit"] = {**fit_info, "stage_s": time.perf_counter() - t0, "model_dir": str(model_dir)}
    if args.fit_only:
        print(json.dumps(result["fit"], indent=2))
        return

    from warmstart.models.catalogue import Catalogue

    catalogue = Catalogue.load(model_dir)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        with serving(
            model_dir,
            tmp,
            server_env,
            args.startup_timeout,
            workers=args.server_workers,
            extra_args=tuple(args.server_arg),
        ) as server:
            result["server"] = {
                "code": code_version(),
                "argv": server.argv,
                "env": server.env,
                "startup_s": server.startup_s,
            }
            with httpx.Client(
                base_url=server.base_url, headers=auth_headers(), timeout=60
            ) as client:
                result["server"]["ready"] = client.get("/readyz").json()
                # The port answers once one worker is ready: measure once all of them are.
                result["server"]["all_workers_ready_s"] = wait_workers(
                    server.base_url, args.server_workers, args.startup_timeout
                )
                t0 = time.perf_counter()
                routes, setup = build_routes(client, catalogue, rng, args.pool)
                setup["setup_s"] = time.perf_counter() - t0
                result["setup"] = setup
                log(f"set up pools in {setup['setup_s']:.1f} s")
                result["server"].update(idle_usage(server.pid))
                log(f"server idle: {result['server']}")

                for name in wanted:
                    route = routes[name]
                    secs = args.seconds if name == "warm" else args.route_seconds
                    for rate in rates:
                        for rep in range(args.repeats):
                            row = measure(args, server, route, rate, secs, rng)
                            rows.append({**row, "repeat": rep + 1})
                            save(result, rows, output)  # partial results survive a crash
                            time.sleep(0.5)

                if args.freshness_trials:
                    result["freshness"] = measure_freshness(
                        args, server, client, routes["warm"], rng
                    )
                    save(result, rows, output)
        save(result, rows, output)
        if args.profile_reps:
            t0 = time.perf_counter()
            log("in-process profile...")
            quiet = wait_quiet(args.quiet_wait, args.quiet_threshold)
            result["inprocess"] = profile_in_subprocess(args, model_dir, tmp)
            result["inprocess"].update(quiet, stage_s=time.perf_counter() - t0)

    target = [
        r["p99_ms"]
        for r in rows
        if r["route"] == "warm" and r["rate"] == TARGET_RATE and r["p99_ms"] is not None
    ]
    result["target"] = {
        "warm_p99_ms_at_100_per_s": target,
        "median": float(np.median(target)) if target else None,
        "target_ms": TARGET_P99_MS,
        "meets": bool(target and float(np.median(target)) <= TARGET_P99_MS),
    }
    result["wall_s"] = time.perf_counter() - wall0
    write_result(output, result)
    png = output.with_suffix(".png")
    plot(png, rows, f"warmstart serve, {args.catalogue} ({catalogue.n_items:,} items), loopback")
    print_summary(result, rows, catalogue.n_items, output, png)


if __name__ == "__main__":
    main()
