"""Warm reads while a batch of items is posted: how long a read waits for a write.

Starts `warmstart serve` on a fitted model (a subprocess on a fresh SQLite database), sends
warm users' recommendation requests on an open-loop schedule (latency from each request's due
time), and part-way through POSTs one batch of new items. Reports the reads due while the POST
was in flight, against those due before it, and how long the POST took. With `--tree`, the
server runs from each given source tree in turn on the same machine and model, so a change
is measured as a ratio against the code before it in the same run:

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_reads_during_writes.py --model models/ml100k \
        --tree /tmp/before --tree .
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, log, machine_info, write_result
from serve_bench.load import run_open_loop
from serve_bench.server import auth_headers, serving, wait_quiet


def _warm_requests(model_dir: Path, n: int, seed: int) -> list[tuple[str, str, bytes | None]]:
    from warmstart.models import Recommender

    model = Recommender.load(model_dir)
    cat = model.catalogue
    warm = np.asarray(cat.user_ids.to_list(), dtype=object)[cat.user_counts() > 0]
    rng = np.random.default_rng(seed)
    users = rng.choice(warm, size=n)
    return [("GET", f"/v1/users/{u}/recommendations?k=10", None) for u in users]


def _new_items(model_dir: Path, n: int, seed: int, tag: str) -> bytes:
    """`n` new items whose texts recombine words of the catalogue's (so they encode like it)."""
    from warmstart.models import Recommender

    texts = Recommender.load(model_dir).catalogue.item_text
    words = " ".join(texts[: min(len(texts), 5000)]).split()
    rng = np.random.default_rng(seed)
    items = [
        {"item_id": f"{tag}-{j}", "text": " ".join(rng.choice(words, size=24))} for j in range(n)
    ]
    return json.dumps({"items": items}).encode()


def _one_tree(tree: Path, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    import httpx

    n = int(args.rate * args.seconds)
    requests = _warm_requests(args.model, n, args.seed)
    body = _new_items(args.model, args.items, args.seed, tag)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(
            args.model, Path(tmp), {"PYTHONPATH": str(tree.resolve() / "src")}, timeout=600
        ) as server,
    ):
        if args.quiet_wait:
            wait_quiet(args.quiet_wait)
        post: dict[str, float] = {}

        def poster() -> None:
            time.sleep(args.post_at)
            post["start"] = time.perf_counter()
            r = httpx.post(
                f"{server.base_url}/v1/items",
                content=body,
                headers={**auth_headers(), "Content-Type": "application/json"},
                timeout=600,
            )
            post["end"] = time.perf_counter()
            post["status"] = r.status_code

        thread = threading.Thread(target=poster, daemon=True)
        t_load = time.perf_counter()
        thread.start()
        phase = run_open_loop(
            server.base_url,
            requests,
            args.rate,
            0.0,
            route="warm",
            transport="stdlib",
            workers=args.clients,
            grace_s=60.0,
            server_pid=server.pid,
        )
        thread.join()
    if post.get("status") != 200:
        raise RuntimeError(f"the POST of {args.items} items answered {post.get('status')}")
    # run_open_loop's schedule starts ~0.05 s after it is called; due times are relative to it.
    due = t_load + 0.05 + np.arange(n) / args.rate
    ok = (phase.status >= 200) & (phase.status < 300)
    lat = phase.latency_s * 1e3
    during = ok & (due >= post["start"]) & (due <= post["end"])
    before = ok & (due < post["start"]) & (due >= t_load + 1.0)

    def pct(mask: np.ndarray) -> dict[str, Any]:
        x = lat[mask]
        if x.size == 0:
            return {"n": 0}
        return {
            "n": int(x.size),
            "p50_ms": float(np.percentile(x, 50)),
            "p99_ms": float(np.percentile(x, 99)),
            "max_ms": float(x.max()),
        }

    out = {
        "tree": str(tree),
        "commit": code_version(tree),
        "post_s": post["end"] - post["start"],
        "reads_during_post": pct(during),
        "reads_before_post": pct(before),
        "errors": int((~ok).sum()),
    }
    log(
        f"{tree}: POST of {args.items} items took {out['post_s']:.2f} s; warm reads during it "
        f"{out['reads_during_post']}, before it {out['reads_before_post']}"
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a fitted warmstart model folder")
    p.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="source tree to serve from (repeat to compare; default: this one)",
    )
    p.add_argument("--rate", type=float, default=100.0, help="warm requests per second")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--items", type=int, default=200, help="items in the one POST")
    p.add_argument("--post-at", type=float, default=3.0, help="seconds into the load")
    p.add_argument("--repeats", type=int, default=1, help="runs per tree, interleaved")
    p.add_argument("--clients", type=int, default=8, help="client connections")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("runs/reads-during-writes.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trees = args.tree or [Path(".")]
    runs = []
    for rep in range(args.repeats):
        for j, tree in enumerate(trees):
            runs.append(_one_tree(tree, args, tag=f"bench-{rep}-{j}"))
    write_result(
        args.output,
        {
            "command": command_line(),
            "machine": machine_info(("numpy", "usearch", "fastapi", "uvicorn")),
            "settings": {k: str(v) for k, v in vars(args).items()},
            "runs": runs,
        },
    )
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
