"""One measured run of a route at a rate (rerun while the shared machine is busy), how soon a
new item shows up in results, and the result file as it grows."""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from common import log, write_result

from serve_bench import TARGET_FRESH_S, TARGET_RATE
from serve_bench.catalogue import pseudo_words
from serve_bench.load import Phase, run_open_loop
from serve_bench.report import fmt
from serve_bench.routes import Route, route_checker
from serve_bench.server import Server, scrape, server_side, wait_quiet


def measure(
    args: argparse.Namespace,
    server: Server,
    route: Route,
    rate: float,
    seconds: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One open-loop run of `route` at `rate`, after waiting for the machine to go quiet; rerun
    (up to --retries times) when other processes took more than --quiet-threshold cores during
    it, keeping the run they disturbed least."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + args.retries):
        reqs = route.make(rng, round((args.warmup + seconds) * rate))
        quiet = wait_quiet(args.quiet_wait, args.quiet_threshold)
        before = scrape(server.base_url)
        phase = run_open_loop(
            server.base_url,
            reqs,
            rate,
            args.warmup,
            route=route.name,
            transport=args.client,
            workers=args.workers,
            grace_s=args.grace,
            server_pid=server.pid,
            check=route_checker(route.expect),
        )
        after = scrape(server.base_url)
        row = {
            **phase.summary(),
            **server_side(before, after, *route.metric),
            **quiet,
            "attempt": attempt + 1,
        }
        log(
            f"{route.name:>20} @ {rate:>4.0f}/s: p50 {fmt(row['p50_ms'])} ms, "
            f"p99 {fmt(row['p99_ms'])} ms, achieved {fmt(row['achieved_rate'])}/s, "
            f"errors {row['errors']}, unsent {row['unsent']}, "
            f"others used {row['other_cores']:.2f} cores"
        )
        if best is None or row["other_cores"] < best["other_cores"]:
            best = row
        if row["other_cores"] <= args.quiet_threshold:
            break
    assert best is not None
    return best


def save(result: dict[str, Any], rows: list[dict[str, Any]], output: Path) -> None:
    """Write what is known so far (rewritten after every run, complete at the end)."""
    result["results"] = rows
    write_result(output, result)


def freshness(
    client: Any, rng: np.random.Generator, trials: int, label: str, poll_timeout: float = 5.0
) -> dict[str, Any]:
    """POST a new item with a distinctive text, then ask POST /v1/recommendations with that text
    until the item is in the top 10. Time from sending the POST to the response that shows it."""
    visible, acks, polls = [], [], []
    missing = 0
    for t in range(trials):
        words = " ".join(pseudo_words(rng, 6))
        item_id = f"bench-fresh-{label}-{t}-{uuid.uuid4().hex[:8]}"
        text = f"Limited edition {words} {uuid.uuid4().hex[:6]}"
        item = {"item_id": item_id, "text": text, "attributes": {"title": f"Fresh {t}"}}
        t0 = time.perf_counter()
        r = client.post("/v1/items", json={"items": [item]})
        acks.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        n = 0
        seen = None
        while time.perf_counter() - t0 < poll_timeout:
            n += 1
            body = {"text": text, "k": 10, "explain": False}
            r = client.post("/v1/recommendations", json=body)
            if r.status_code == 200 and item_id in [
                x["item_id"] for x in r.json()["recommendations"]
            ]:
                seen = time.perf_counter() - t0
                break
        if seen is None:
            missing += 1
        else:
            visible.append(seen)
        polls.append(n)
        time.sleep(0.3)
    ms = np.asarray(visible) * 1e3
    ack = np.asarray(acks) * 1e3
    return {
        "trials": trials,
        "visible_within_s": poll_timeout,
        "not_visible": missing,
        "visible_p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
        "visible_max_ms": float(ms.max()) if ms.size else None,
        "post_ack_p50_ms": float(np.percentile(ack, 50)),
        "post_ack_max_ms": float(ack.max()),
        "polls_max": int(max(polls)),
        "target_s": TARGET_FRESH_S,
        "meets_target": bool(missing == 0 and ms.size and ms.max() <= 1e3 * TARGET_FRESH_S),
    }


def measure_freshness(
    args: argparse.Namespace, server: Server, client: Any, warm: Route, rng: np.random.Generator
) -> dict[str, Any]:
    """`freshness` on an idle server, then again under warm load at the target rate: the
    second also shows how long an item write holds up recommendations."""
    t0 = time.perf_counter()
    quiet = wait_quiet(args.quiet_wait, args.quiet_threshold)
    fresh: dict[str, Any] = {
        "idle": {**freshness(client, rng, args.freshness_trials, "idle"), **quiet}
    }
    log(f"freshness idle: {fresh['idle']}")
    secs = args.freshness_trials * 0.45 + 6.0
    reqs = warm.make(rng, int((args.warmup + secs) * TARGET_RATE))
    box: dict[str, Phase] = {}

    def background() -> None:
        box["phase"] = run_open_loop(
            server.base_url,
            reqs,
            TARGET_RATE,
            args.warmup,
            route="warm (during item POSTs)",
            transport=args.client,
            workers=args.workers,
            grace_s=args.grace,
            server_pid=server.pid,
        )

    bg = threading.Thread(target=background)
    bg.start()
    time.sleep(args.warmup + 1.0)
    fresh["under_warm_load"] = freshness(client, rng, args.freshness_trials, "load")
    bg.join()
    fresh["warm_load_during"] = box["phase"].summary()
    fresh["stage_s"] = time.perf_counter() - t0
    log(f"freshness under load: {fresh['under_warm_load']}")
    log(f"warm load during item POSTs: {fresh['warm_load_during']}")
    return fresh
