"""Server CPU per request, one request at a time: what each route costs the server, without queueing.

Starts `warmstart serve` on a model (as bench_serve.py does, with the same request pools), sends
each route's requests one after another over one keep-alive connection, and reports the server
process's CPU time and the wall time per request, then the CPU time of each server thread. A
thread that burns CPU while the requests are sequential (a spinning BLAS or OpenMP worker) shows
up as CPU per request above wall time.

    .venv/bin/python benchmarks/serve_cpu.py --model /tmp/warmstart-bench-serve/synthetic-100k/model
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from serve_bench.load import StdlibTransport
from serve_bench.routes import build_routes
from serve_bench.server import auth_headers, process_cpu_s, serving

ROUTES = ("healthz", "warm", "warm-noexplain", "text-only", "few-shot", "anonymous")


def thread_cpu(pid: int) -> list[tuple[str, str, float]]:
    """(thread id, name, CPU seconds) of every thread of a process."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        stat = (task / "stat").read_text()
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        out.append((task.name, name, cpu))
    return out


def main() -> None:
    import httpx

    from warmstart.models.catalogue import Catalogue

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--requests", type=int, default=600, help="measured requests per route")
    p.add_argument("--warmup", type=int, default=60, help="unmeasured requests per route first")
    p.add_argument("--pool", type=int, default=100)
    p.add_argument("--routes", default=",".join(ROUTES))
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    catalogue = Catalogue.load(args.model)
    with (
        tempfile.TemporaryDirectory(prefix="serve-cpu-") as tmp,
        serving(args.model, Path(tmp), {}, args.startup_timeout) as server,
        httpx.Client(base_url=server.base_url, headers=auth_headers(), timeout=60) as client,
    ):
        routes, _ = build_routes(client, catalogue, rng, args.pool)
        conn = StdlibTransport(server.base_url)
        print(f"{'route':<16} {'server CPU ms/req':>18} {'wall ms/req':>12}")
        for name in args.routes.split(","):
            reqs = routes[name].make(rng, args.warmup + args.requests)
            for method, path, body in reqs[: args.warmup]:
                conn.request(method, path, body)
            cpu0, t0 = process_cpu_s(server.pid), time.perf_counter()
            for method, path, body in reqs[args.warmup :]:
                status, text = conn.request(method, path, body)
                if status != 200:
                    raise SystemExit(f"{name}: {method} {path} answered {status}: {text[:300]!r}")
            cpu = (process_cpu_s(server.pid) - cpu0) / args.requests * 1000
            wall = (time.perf_counter() - t0) / args.requests * 1000
            print(f"{name:<16} {cpu:>18.2f} {wall:>12.2f}", flush=True)
        print("server threads (id, name, CPU s since start):")
        for tid, tname, cpu in thread_cpu(server.pid):
            if cpu > 0.05:
                print(f"  {tid} {tname} {cpu:.2f}")


if __name__ == "__main__":
    main()
