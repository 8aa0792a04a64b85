"""How soon a write acknowledged by one serving process is visible on another over the same store.

Starts two `warmstart serve` processes on one database (a shared SQLite file, or the PostgreSQL
given by --db) and, trial after trial, writes through the first and polls the second until the
write shows: a user (POST /v1/users, then GET /v1/users/{id} until 200) and an item (POST
/v1/items, then a profile request naming it until it is no longer 404). The delay is from the
first process's acknowledgement to the first answer of the second that shows it; the poll runs
every millisecond, so the figure includes up to a millisecond of polling.

    .venv/bin/python benchmarks/bench_propagation.py --model models/ml100k
    .venv/bin/python benchmarks/bench_propagation.py --model models/ml100k --db postgresql://...
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, log, machine_info, write_result
from serve_bench.server import auth_headers, serving


def _trial(a: Any, b: Any, kind: str, n: str, text: str) -> float:
    """Seconds from `a` acknowledging write `n` to `b` showing it (`n` new to the store)."""
    if kind == "user":
        body = {"users": [{"user_id": f"prop-user-{n}", "text": text}]}
        write, path = "/v1/users", f"/v1/users/prop-user-{n}"
    else:
        body = {"items": [{"item_id": f"prop-item-{n}", "text": f"{text} {n}"}]}
        write, path = "/v1/items", "/v1/recommendations"
    r = a.post(write, content=json.dumps(body))
    acked = time.perf_counter()
    r.raise_for_status()
    probe = json.dumps({"item_ids": [f"prop-item-{n}"], "k": 1})
    while True:
        if kind == "user":
            status = b.get(path).status_code
        else:
            status = b.post(path, content=probe).status_code
        if status == 200:
            return time.perf_counter() - acked
        if status != 404:
            raise RuntimeError(f"{path} answered {status}")
        if time.perf_counter() - acked > 30:
            raise RuntimeError(f"{kind} {n} not visible on the second process after 30 s")
        time.sleep(0.001)


def main() -> None:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a fitted warmstart model folder")
    p.add_argument("--db", default=None, help="a PostgreSQL URL (default: a shared SQLite file)")
    p.add_argument("--trials", type=int, default=100, help="per kind of write")
    p.add_argument("--output", type=Path, default=Path("runs/propagation.json"))
    args = p.parse_args()
    text = "a quiet film about two friends on a long road trip"
    delays: dict[str, list[float]] = {"user": [], "item": []}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        with (
            serving(args.model, Path(tmp), env, 600, args.db, "first") as first,
            serving(args.model, Path(tmp), env, 600, args.db, "second") as second,
        ):
            headers = {**auth_headers(), "Content-Type": "application/json"}
            with (
                httpx.Client(base_url=first.base_url, headers=headers, timeout=60) as a,
                httpx.Client(base_url=second.base_url, headers=headers, timeout=60) as b,
            ):
                run = uuid.uuid4().hex[:8]  # ids no earlier run on this database wrote
                for n in range(args.trials):
                    for kind in delays:
                        delays[kind].append(_trial(a, b, kind, f"{run}-{n}", text))
    summary = {
        kind: {
            "trials": len(x),
            "p50_ms": float(np.percentile(x, 50) * 1e3),
            "p99_ms": float(np.percentile(x, 99) * 1e3),
            "max_ms": float(np.max(x) * 1e3),
        }
        for kind, x in delays.items()
    }
    backend = "postgresql" if args.db else "sqlite"
    log(f"{backend}: {summary}")
    command = command_line()
    if args.db:
        from sqlalchemy.engine import make_url

        command = command.replace(args.db, make_url(args.db).render_as_string(hide_password=True))
    write_result(
        args.output,
        {
            "command": command,
            "machine": machine_info(("numpy", "sqlalchemy", "uvicorn")),
            "code": code_version(),
            "backend": backend,
            "summary": summary,
            "delays_ms": {k: [round(v * 1e3, 3) for v in x] for k, x in delays.items()},
        },
    )
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
