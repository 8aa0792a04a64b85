"""Memory per worker: RSS and PSS of each `warmstart serve` process, 1 worker against N.

Starts `warmstart serve --workers N` on a fitted model (a subprocess on a fresh SQLite
database), sends warm-user, profile and similar-item requests on new connections until every
worker has answered some (so that what a request touches is loaded), then reads each process's
`/proc/PID/smaps_rollup`. RSS counts every page a process maps; PSS divides a shared page
among the processes that map it, so the PSS of all workers is what they cost the machine
together. With `--tree`, the server runs from each source tree in turn on the same model:

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_memory.py --model models/ml100k \
        --tree /tmp/before --tree . --workers 1,2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version, command_line, log, machine_info, write_result
from serve_bench.server import auth_headers, serving, wait_workers

_FIELDS = (
    "Rss",
    "Pss",
    "Pss_Anon",
    "Pss_File",
    "Anonymous",
    "Shared_Clean",
    "Private_Clean",
    "Private_Dirty",
)


def smaps(pid: int) -> dict[str, float]:
    """The process's memory totals in MiB (Linux `smaps_rollup`)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in _FIELDS:
            out[key] = int(rest.split()[0]) / 1024
    return out


def _requests(model_dir: Path, n: int, seed: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Warm users, profiles of catalogue text, and similar items, shuffled."""
    from warmstart.models import Recommender

    cat = Recommender.load(model_dir).catalogue
    rng = np.random.default_rng(seed)
    warm = np.asarray(cat.user_ids.to_list(), dtype=object)[cat.user_counts() > 0]
    items = np.asarray(cat.item_ids.to_list(), dtype=object)
    texts = cat.item_text
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for u in rng.choice(warm, size=n):
        out.append(("GET", f"/v1/users/{u}/recommendations?k=10", None))
    for j in rng.integers(len(texts), size=n):
        out.append(("POST", "/v1/recommendations", {"text": texts[j][:200], "k": 10}))
    for i in rng.choice(items, size=n):
        out.append(("GET", f"/v1/items/{i}/similar?k=10", None))
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


def _one(tree: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    requests = _requests(args.model, args.requests, args.seed)
    env = {"PYTHONPATH": str(tree.resolve() / "src")}
    if args.cache_dir is not None:  # HNSW graphs built by the first run are loaded by the rest
        env["WARMSTART_CACHE_DIR"] = str(args.cache_dir)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(args.model, Path(tmp), env, timeout=1800, workers=workers) as server,
    ):
        wait_workers(server.base_url, workers, 1800)  # the port answers once one worker is up
        pids: dict[int, int] = {}  # worker pid -> requests it answered
        t0 = time.perf_counter()
        for method, path, body in requests:
            with httpx.Client(base_url=server.base_url, headers=auth_headers(), timeout=60) as c:
                pid = int(c.get("/readyz").json()["worker"])
                r = c.request(method, path, json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:200]}")
                pids[pid] = pids.get(pid, 0) + 1
        took = time.perf_counter() - t0
        if len(pids) != workers:
            raise RuntimeError(f"only workers {sorted(pids)} answered, of {workers}")
        time.sleep(1.0)
        per_worker = {str(pid): {**smaps(pid), "requests": n} for pid, n in sorted(pids.items())}
        parent = smaps(server.pid) if workers > 1 else None
    total_pss = sum(w["Pss"] for w in per_worker.values()) + (parent["Pss"] if parent else 0.0)
    row = {
        "tree": str(tree),
        "code": code_version(tree),
        "workers": workers,
        "per_worker_mib": per_worker,
        "parent_mib": parent,
        "total_pss_mib": round(total_pss, 1),
        "startup_s": round(server.startup_s, 1),
        "requests_s": round(took, 1),
    }

    def each(field: str) -> str:
        return ", ".join(f"{w[field]:.0f}" for w in per_worker.values())

    log(
        f"{tree} ({row['code']['commit'][:7]}), {workers} worker(s): RSS {each('Rss')} MiB, "
        f"PSS {each('Pss')} MiB (anonymous {each('Anonymous')}, file {each('Pss_File')}), "
        f"all processes' PSS {total_pss:.0f} MiB"
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a fitted warmstart model folder")
    p.add_argument("--tree", type=Path, action="append", help="source tree (repeatable)")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    p.add_argument("--requests", type=int, default=100, help="requests of each kind")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="a warmstart cache shared by the runs"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("runs/memory.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trees = args.tree or [Path(".")]
    runs = [_one(t, int(n), args) for t in trees for n in args.workers.split(",")]
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
