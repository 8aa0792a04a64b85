"""`warmstart serve` in a subprocess, and what the benchmark reads about it from outside: its
CPU time, the machine's load (the machine is shared), and the server's own latency histogram."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import log

KEY = "bench-serve-key"


def free_port() -> int:
    """A loopback port nothing listens on now, so that runs side by side do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server: where to reach it, its process (for CPU readings), how it started."""

    base_url: str
    port: int
    pid: int
    startup_s: float
    argv: list[str]
    env: dict[str, str]
    log_path: Path


@contextlib.contextmanager
def serving(
    model_dir: Path,
    tmp: Path,
    extra_env: dict[str, str],
    timeout: float,
    db_url: str | None = None,
    name: str = "server",
    workers: int = 1,
    extra_args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """`warmstart serve` in a subprocess on a fresh SQLite db (or `db_url`) and embedding cache
    in `tmp`; several servers started with one `tmp` share its database and cache, as workers
    on one machine do (`name` keeps their logs apart)."""
    import httpx

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "warmstart.cli.main",
        "serve",
        "--model",
        str(model_dir),
        "--db",
        db_url or f"sqlite:///{tmp / 'serve.db'}",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--log-level",
        "warning",
        "--workers",
        str(workers),
        *extra_args,
    ]
    # A cache of its own: the texts the server encodes (queries, new items) stay out of the
    # user's cache, and the server starts with no shards, as a fresh deployment would.
    env_extra = {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WARMSTART_CACHE_DIR": str(tmp / "server-cache"),
        **extra_env,
    }
    log_path = tmp / f"{name}.log"
    t0 = time.perf_counter()
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env_extra}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{tail}")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"the server was not ready within {timeout:.0f} s")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        startup = time.perf_counter() - t0
        log(f"server up on port {port} (pid {proc.pid}) after {startup:.1f} s")
        yield Server(base, port, proc.pid, startup, argv, env_extra, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    """CPU seconds all processes on this machine have used so far (non-idle time in /proc/stat)."""
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_s: float, threshold: float = 0.25, sample_s: float = 2.0) -> dict[str, float]:
    """Wait (at most `max_s`) until processes other than ours use under `threshold` cores.

    The machine is shared: other people's jobs running alongside would be measured as latency.
    Returns how long it waited and the busy cores seen last.
    """
    t0 = time.perf_counter()
    busy = float("nan")
    while True:
        b0, w0 = system_busy_s(), time.perf_counter()
        time.sleep(sample_s)
        busy = (system_busy_s() - b0) / (time.perf_counter() - w0)
        if busy < threshold or time.perf_counter() - t0 >= max_s:
            return {"waited_s": time.perf_counter() - t0, "busy_cores_before": busy}


def idle_usage(pid: int, seconds: float = 5.0) -> dict[str, float]:
    """The server's CPU use with no requests (background threads) and its resident memory."""
    c0, w0 = process_cpu_s(pid), time.perf_counter()
    time.sleep(seconds)
    cores = (process_cpu_s(pid) - c0) / (time.perf_counter() - w0)
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024**2
    return {"idle_cores": cores, "rss_gb": round(rss, 2)}


_METRIC_RE = re.compile(r"^(warmstart_request_seconds_(?:sum|count|bucket))\{(.*)\} (\S+)$")


def scrape(base: str) -> dict[tuple[str, str, str, str], float]:
    """The server's latency histogram: (series, route, method, le) -> value."""
    import httpx

    text = httpx.get(f"{base}/metrics", headers=auth_headers(), timeout=10).text
    out: dict[tuple[str, str, str, str], float] = {}
    for line in text.splitlines():
        m = _METRIC_RE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        key = (m.group(1), labels.get("route", ""), labels.get("method", ""), labels.get("le", ""))
        out[key] = float(m.group(3))
    return out


def server_side(
    before: dict[tuple[str, str, str, str], float],
    after: dict[tuple[str, str, str, str], float],
    route: str,
    method: str,
) -> dict[str, float | None]:
    """Mean time inside the app (middleware to response) and the share of requests it answered
    within 25 ms, between two scrapes."""

    def delta(series: str, le: str = "") -> float:
        key = (series, route, method, le)
        return after.get(key, 0.0) - before.get(key, 0.0)

    n = delta("warmstart_request_seconds_count")
    if n <= 0:
        return {"server_mean_ms": None, "server_share_within_25ms": None}
    return {
        "server_mean_ms": 1e3 * delta("warmstart_request_seconds_sum") / n,
        "server_share_within_25ms": delta("warmstart_request_seconds_bucket", "0.025") / n,
    }


def auth_headers() -> dict[str, str]:
    """The bearer key the benchmark starts the server with (every route but health needs it)."""
    return {"Authorization": f"Bearer {KEY}"}


def wait_workers(base_url: str, workers: int, timeout: float) -> float:
    """Seconds until `workers` distinct worker pids have answered /readyz with 200 (each on a
    new connection, which the kernel may hand to any worker)."""
    import httpx

    t0 = time.perf_counter()
    seen: set[int] = set()
    while len(seen) < workers:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"only workers {sorted(seen)} got ready, of {workers}")
        r = httpx.get(f"{base_url}/readyz", timeout=10)
        if r.status_code == 200:
            seen.add(int(r.json()["worker"]))
        time.sleep(0.05)
    return time.perf_counter() - t0
