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

Routes (each at every --rates value): healthz (the client + HTTP floor), warm users, text-only
users, few-shot users (3 clicks), anonymous visitors with text (from a pool of texts, and with a
new text on every request), with and without explanations. Then freshness: POST /v1/items, and
poll POST /v1/recommendations with the item's text until the item is in the top 10, idle and
under warm load. Last, an in-process profile of `Engine` calls on the same model.

Writes --output (default runs/serve-<catalogue>.json) and a PNG of p50/p99 against rate beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import http.client
import io
import itertools
import json
import os
import platform
import pstats
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

KEY = "bench-serve-key"
TARGET_P99_MS = 25.0
TARGET_RATE = 100.0
TARGET_FRESH_S = 1.0

Req = tuple[str, str, bytes | None]  # method, path, JSON body


# ---- machine and command -------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """nproc, CPU model and memory of this machine, and the versions that matter here."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gb = round(int(first.split()[1]) / 1024**2, 1)
    versions = {}
    for name in ("numpy", "fastapi", "starlette", "uvicorn", "pydantic", "httpx", "usearch"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    loops = [m for m in ("uvloop", "httptools") if _importable(m)]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "uvicorn_speedups_installed": loops,
    }


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def code_version() -> dict[str, Any]:
    """The commit the code under test comes from, and files changed since (the tree is shared)."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.rstrip("\n")  # not strip(): porcelain lines start with a status column
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "src_changed_since": dirty}


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- catalogues and models -----------------------------------------------------------------
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct made-up words of 2-3 syllables (a vocabulary no encoder has seen)."""
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def make_synthetic(
    n_items: int, n_users: int, n_interactions: int, n_topics: int, seed: int
) -> Any:
    """A Dataset of `n_items` items in `n_topics` topics and users who pick 1-3 topics.

    An item's text is 6 words of its topic, 2 of another topic and 4 filler words; its title is
    two of its topic words. Each user draws interactions from their topics by Dirichlet weights,
    and inside a topic with a heavy head (rank = size * U^3), so popularity is skewed as in real
    catalogues; repeats are dropped and the rest subsampled to `n_interactions`.
    """
    import pandas as pd

    from warmstart.data import from_frames

    rng = np.random.default_rng(seed)
    per_topic = 15
    vocab = np.array(pseudo_words(rng, n_topics * per_topic + 200))
    topic_words = vocab[: n_topics * per_topic].reshape(n_topics, per_topic)
    filler = vocab[n_topics * per_topic :]
    item_topic = rng.integers(n_topics, size=n_items)
    other = (item_topic + rng.integers(1, n_topics, size=n_items)) % n_topics
    own = topic_words[item_topic[:, None], rng.integers(per_topic, size=(n_items, 6))]
    mixed = topic_words[other[:, None], rng.integers(per_topic, size=(n_items, 2))]
    fill = filler[rng.integers(len(filler), size=(n_items, 4))]
    words = rng.permuted(np.concatenate([own, mixed, fill], axis=1), axis=1)
    item_ids = [f"sku-{i:06d}" for i in range(n_items)]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{a.capitalize()} {b.capitalize()}" for a, b in own[:, :2].tolist()],
            "text": [" ".join(row) for row in words.tolist()],
        }
    )

    n_fav = rng.integers(1, 4, size=n_users)
    fav = rng.integers(n_topics, size=(n_users, 3))
    weights = rng.dirichlet(np.ones(3), size=n_users)
    weights[np.arange(3)[None, :] >= n_fav[:, None]] = 0.0
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    sizes = rng.lognormal(0.0, 0.8, size=n_users)
    sizes = np.maximum(5, np.round(sizes / sizes.sum() * n_interactions * 1.3)).astype(np.int64)
    user_of = np.repeat(np.arange(n_users), sizes)
    slot = np.minimum((rng.random(len(user_of))[:, None] > cum[user_of]).sum(axis=1), 2)
    topic = fav[user_of, slot]
    order = np.argsort(item_topic, kind="stable")
    counts = np.bincount(item_topic, minlength=n_topics)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.floor(counts[topic] * rng.random(len(topic)) ** 3).astype(np.int64)
    item_of = order[starts[topic] + rank]
    pairs = np.unique(user_of * n_items + item_of)
    if len(pairs) > n_interactions:
        pairs = np.sort(rng.choice(pairs, size=n_interactions, replace=False))
    interactions = pd.DataFrame(
        {
            "user_id": (pairs // n_items).astype(np.int64),
            "item_id": np.asarray(item_ids, dtype=object)[pairs % n_items],
        }
    )
    return from_frames(
        interactions,
        items,
        item_text="{title}. {text}",
        name=f"synthetic-{n_items // 1000}k",
    )


def fit_params(args: argparse.Namespace) -> dict[str, Any]:
    """What the model depends on: a saved model is reused only when these match."""
    if args.catalogue == "ml-100k":
        return {"catalogue": "ml-100k", "min_rating": 4.0, "model": {}}
    return {
        "catalogue": "synthetic-100k",
        "n_items": args.synthetic_items,
        "n_users": args.synthetic_users,
        "n_interactions": args.synthetic_interactions,
        "n_topics": args.synthetic_topics,
        "seed": args.seed,
        "model": {
            "encoder": "hashing",
            "cf": {"factors": 64, "iterations": 15, "regularization": 0.05, "seed": 0},
            # Chosen here, not on validation: choosing lambda_* and beta scores every validation
            # user against every item in one dense matrix (20k x 100k floats = 8 GB, copied by
            # top-k), and choosing the cold-user weights refits the whole model a second time.
            # All are non-zero so every serving path (text profile fold-in, neighbour and
            # popularity blends) runs as it would with chosen values.
            "lambda_items": 10.0,
            "lambda_users": 10.0,
            "text_profile_weight": 1.0,
            "neighbour_weight": 1.0,
            "popularity_weight": 1.0,
        },
    }


def ensure_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The model folder for --catalogue, fitted now or reused from an earlier run with the same
    parameters; returns it with a description of the data and the fit."""
    from warmstart.models.hybrid import WarmStartRecommender

    params = fit_params(args)
    model_dir = workdir / "model"
    info_path = workdir / "fit.json"
    if (model_dir / "model.json").is_file() and info_path.is_file() and not args.refit:
        info = json.loads(info_path.read_text())
        if info.get("params") == params:
            fitted = f"fitted in {info['fit_s']:.0f} s; --refit to redo"
            log(f"reusing the model in {model_dir} ({fitted})")
            return model_dir, {**info, "reused": True}
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.catalogue == "ml-100k":
        from warmstart.data import load_builtin

        data = load_builtin("ml-100k", args.data_dir)
        data = data.with_interactions(data.weights >= params["min_rating"])
        model = WarmStartRecommender()
        note = "WarmStartRecommender() defaults (MiniLM encoder, embeddings from the cache)"
    else:
        data = make_synthetic(
            params["n_items"],
            params["n_users"],
            params["n_interactions"],
            params["n_topics"],
            params["seed"],
        )
        # Own embedding cache: 100k hashed item texts do not belong in the user's cache.
        model = WarmStartRecommender(cache_dir=workdir / "embedding-cache", **params["model"])
        note = (
            "hashing encoder: MiniLM would take ~30 minutes to encode 100k item texts on this "
            "machine (~60 texts/s), and the latency under test is retrieval and scoring, which "
            "depends on catalogue size and vector width, not on the encoder that filled them"
        )
    build_s = time.perf_counter() - t0
    log(
        f"{data.name}: {data.n_users:,} users, {data.n_items:,} items, "
        f"{data.n_interactions:,} interactions (built in {build_s:.1f} s); fitting..."
    )
    t1 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t1
    model.save(model_dir)
    info = {
        "params": params,
        "dataset": {
            "name": data.name,
            "users": data.n_users,
            "items": data.n_items,
            "interactions": data.n_interactions,
        },
        "data_build_s": build_s,
        "fit_s": fit_s,
        "note": note,
        "chosen": {
            "lambda_items": model.lambda_items_,
            "lambda_users": model.lambda_users_,
            "text_profile_weight": model.text_profile_weight_,
            "neighbour_weight": model.cold_blend_.neighbour_weight,
            "popularity_weight": model.cold_blend_.popularity_weight,
        },
        "item_vector_dim": int(model.item_vectors.shape[1]),
        "encoder": model.encoder.name,
    }
    info_path.write_text(json.dumps(info, indent=2))
    log(f"fitted in {fit_s:.0f} s; saved to {model_dir}")
    del model, data
    gc.collect()
    return model_dir, {**info, "reused": False}


# ---- the server ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    port: int
    pid: int
    startup_s: float
    argv: list[str]
    env: dict[str, str]
    log_path: Path


@contextlib.contextmanager
def serving(
    model_dir: Path, tmp: Path, extra_env: dict[str, str], timeout: float
) -> Iterator[Server]:
    """`warmstart serve` in a subprocess on a fresh SQLite db and embedding cache in `tmp`."""
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
        f"sqlite:///{tmp / 'serve.db'}",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--log-level",
        "warning",
    ]
    # A cache of its own: the texts the server encodes (queries, new items) stay out of the
    # user's cache, and the server starts with no shards, as a fresh deployment would.
    env_extra = {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WARMSTART_CACHE_DIR": str(tmp / "server-cache"),
        **extra_env,
    }
    log_path = tmp / "server.log"
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
    return {"Authorization": f"Bearer {KEY}"}


# ---- clients ----------------------------------------------------------------------------
class HttpxTransport:
    """One keep-alive connection through `httpx.Client`."""

    def __init__(self, base: str) -> None:
        import httpx

        self._client = httpx.Client(
            base_url=base,
            headers={**auth_headers(), "Content-Type": "application/json"},
            timeout=60,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        r = self._client.request(method, path, content=body)
        return r.status_code, r.content

    def close(self) -> None:
        self._client.close()


class StdlibTransport:
    """One keep-alive connection through `http.client` (less client CPU per request than httpx)."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self._addr = (host, int(port))
        self._conn = http.client.HTTPConnection(*self._addr, timeout=60)
        self._headers = {**auth_headers(), "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        try:
            self._conn.request(method, path, body=body, headers=self._headers)
            r = self._conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = http.client.HTTPConnection(*self._addr, timeout=60)
            raise

    def close(self) -> None:
        self._conn.close()


Transport = HttpxTransport | StdlibTransport
TRANSPORTS: dict[str, Callable[[str], Transport]] = {
    "httpx": HttpxTransport,
    "stdlib": StdlibTransport,
}


# ---- the open-loop load generator ----------------------------------------------------------
@dataclass
class Phase:
    """One open-loop run: per-request due time, send lag, latency and status."""

    route: str
    rate: float
    requests: int
    measured: np.ndarray  # bool: due after the warm-up
    latency_s: np.ndarray  # completion - due (nan: not sent)
    service_s: np.ndarray  # completion - send
    lag_s: np.ndarray  # send - due (client lateness, or queueing behind busy workers)
    status: np.ndarray  # HTTP status; -1 exception; -2 not sent (past the grace period)
    window_s: float
    client_cpu_s: float
    server_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        m = self.measured
        sent = m & (self.status != -2)
        ok = m & (self.status >= 200) & (self.status < 300)
        lat = self.latency_s[ok] * 1e3
        n = int(m.sum())

        def pct(q: float) -> float | None:
            return float(np.percentile(lat, q)) if lat.size else None

        return {
            "route": self.route,
            "rate": self.rate,
            "seconds": self.window_s,
            "scheduled": n,
            "completed_ok": int(ok.sum()),
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": float(lat.max()) if lat.size else None,
            "mean_ms": float(lat.mean()) if lat.size else None,
            "service_p50_ms": float(np.nanpercentile(self.service_s[ok] * 1e3, 50))
            if ok.any()
            else None,
            "send_lag_p99_ms": float(np.nanpercentile(self.lag_s[sent] * 1e3, 99))
            if sent.any()
            else None,
            "errors": int((sent & ~ok).sum()),
            "unsent": int((m & (self.status == -2)).sum()),
            **self.extra,
        }


def run_open_loop(
    base: str,
    requests: Sequence[Req],
    rate: float,
    warmup_s: float,
    *,
    route: str,
    transport: str,
    workers: int,
    grace_s: float,
    server_pid: int | None,
    check: Callable[[bytes], str | None] | None = None,
) -> Phase:
    """Send `requests` at `rate` per second on a fixed schedule; the first `warmup_s` seconds'
    worth are sent but not measured. Requests still unsent `grace_s` after the last due time are
    dropped (counted as unsent: the server could not keep up)."""
    n = len(requests)
    latency = np.full(n, np.nan)
    service = np.full(n, np.nan)
    lag = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int64)
    done = np.full(n, np.nan)
    counter = itertools.count()
    lock = threading.Lock()
    make = TRANSPORTS[transport]
    clients = [make(base) for _ in range(workers)]
    for c in clients:  # open every connection before the clock starts
        c.request("GET", "/healthz", None)
    start = time.perf_counter() + 0.05
    due = start + np.arange(n) / rate
    hard_stop = float(due[-1]) + grace_s
    first_error: list[str] = []
    misrouted: list[str] = []

    def worker(client: Transport) -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= n:
                return
            d = float(due[i])
            now = time.perf_counter()
            if now < d:
                time.sleep(d - now)
            elif now > hard_stop:
                status[i] = -2
                continue
            sent = time.perf_counter()
            try:
                code, body = client.request(*requests[i])
            except Exception as exc:  # any failure is one error
                code, body = -1, repr(exc).encode()
            end = time.perf_counter()
            status[i], latency[i], service[i], lag[i], done[i] = (
                code,
                end - d,
                end - sent,
                sent - d,
                end,
            )
            if not 200 <= code < 300:
                if not first_error:
                    first_error.append(f"{code}: {body[:300]!r}")
            elif check is not None and i % 97 == 0:
                problem = check(body)
                if problem is not None:
                    misrouted.append(problem)

    cpu0 = time.process_time()
    srv0 = process_cpu_s(server_pid) if server_pid else 0.0
    busy0, wall0 = system_busy_s(), time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client_cpu = time.process_time() - cpu0
    server_cpu = (process_cpu_s(server_pid) - srv0) if server_pid else 0.0
    wall = time.perf_counter() - wall0
    others = (system_busy_s() - busy0 - client_cpu - server_cpu) / wall
    for c in clients:
        c.close()
    measured = due >= start + warmup_s
    # The measured window runs from the first measured due time to the last measured completion;
    # throughput counts every answer in it, warm-up backlog included, so an overloaded server is
    # credited with what it did (counting only measured requests would understate it).
    finished = done[measured]
    window = (
        float(np.nanmax(finished) - due[measured][0])
        if measured.any() and np.isfinite(finished).any()
        else 0.0
    )
    answered = (status >= 200) & (status < 300)
    if window > 0:
        in_window = answered & (done >= due[measured][0]) & (done <= due[measured][0] + window)
        throughput: float | None = float(in_window.sum() / window)
    elif answered.any():  # not one measured request was answered: rate over the whole run
        throughput = float(answered.sum() / (np.nanmax(done[answered]) - due[0]))
    else:
        throughput = None
    n_sent = int(((status != -2) & (status != 0)).sum())
    extra: dict[str, Any] = {
        "achieved_rate": throughput,
        "sent": n_sent,
        "answered_incl_warmup": int(answered.sum()),
        "client_cpu_ms_per_req": 1e3 * client_cpu / max(n_sent, 1),
        "server_cpu_ms_per_req": 1e3 * server_cpu / max(n_sent, 1),
        "server_cores": server_cpu / wall,
        "client_cores": client_cpu / wall,
        # Processes other than the server and this client (other people's jobs): CPU they took
        # from the two cores during the run, in cores.
        "other_cores": max(others, 0.0),
    }
    if first_error:
        extra["first_error"] = first_error[0]
    if misrouted:
        extra["misrouted_spot_checks"] = len(misrouted)
        extra["misrouted_example"] = misrouted[0]
    return Phase(
        route,
        rate,
        n,
        measured,
        latency,
        service,
        lag,
        status,
        window,
        client_cpu,
        server_cpu,
        extra,
    )


# ---- what to send --------------------------------------------------------------------------
@dataclass
class Route:
    """A request mix: how to build n requests, the server route it hits, the `route` expected."""

    name: str
    make: Callable[[np.random.Generator, int], list[Req]]
    metric: tuple[str, str]  # (route label, method) in the server's latency histogram
    expect: str | None = None  # the response's "route" field


def profile_texts(rng: np.random.Generator, item_texts: Sequence[str], n: int) -> list[str]:
    """n distinct short self-descriptions made of words from the catalogue's item texts."""
    out: dict[str, None] = {}
    while len(out) < n:
        picks = rng.choice(len(item_texts), size=2, replace=False)
        words = [w for p in picks for w in re.findall(r"[A-Za-z]{3,}", item_texts[int(p)])]
        if len(words) < 4:
            continue
        chosen = rng.choice(words, size=min(len(words), int(rng.integers(5, 9))), replace=False)
        out["I am looking for " + " ".join(chosen).lower()] = None
    return list(out)


def get_json(client: Any, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
    t0 = time.perf_counter()
    r = client.request(method, path, json=body)
    ms = 1e3 * (time.perf_counter() - t0)
    return r.status_code, (r.json() if r.content else None), ms


def build_routes(
    client: Any, catalogue: Any, rng: np.random.Generator, pool: int
) -> tuple[dict[str, Route], dict[str, Any]]:
    """Create the text-only and few-shot users on the server, warm each pool entry once (the
    first request for a text pays its encoding), and return the request mixes."""
    counts = catalogue.user_counts()
    warm = [str(u) for u in np.asarray(catalogue.user_ids.to_list(), dtype=object)[counts > 0]]
    item_ids = [str(i) for i in catalogue.item_ids.to_list()]
    item_counts = catalogue.item_counts()
    common = [item_ids[i] for i in np.flatnonzero(item_counts >= 5)]
    texts = profile_texts(rng, catalogue.item_text, pool)
    setup: dict[str, Any] = {"warm_users": len(warm), "pool": pool}

    text_users = [f"bench-text-{i}" for i in range(pool)]
    users = [{"user_id": u, "text": t} for u, t in zip(text_users, texts, strict=True)]
    code, _, _ = get_json(client, "POST", "/v1/users", {"users": users})
    assert code == 200, code
    few_users = [f"bench-few-{i}" for i in range(pool)]
    events = [
        {"user_id": u, "item_id": str(item), "type": "click", "event_id": f"{u}-{j}"}
        for u in few_users
        for j, item in enumerate(rng.choice(common, size=3, replace=False))
    ]
    for start in range(0, len(events), 900):
        code, body, _ = get_json(
            client, "POST", "/v1/events", {"events": events[start : start + 900]}
        )
        assert code == 200, (code, body)

    def user_reqs(
        ids: Sequence[str], explain: bool
    ) -> Callable[[np.random.Generator, int], list[Req]]:
        tail = "" if explain else "&explain=false"
        paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=10{tail}" for u in ids]

        def make(r: np.random.Generator, n: int) -> list[Req]:
            return [("GET", paths[int(j)], None) for j in r.integers(len(paths), size=n)]

        return make

    def anon_reqs(explain: bool, fresh: bool) -> Callable[[np.random.Generator, int], list[Req]]:
        def make(r: np.random.Generator, n: int) -> list[Req]:
            out: list[Req] = []
            for j in r.integers(len(texts), size=n):
                text = texts[int(j)] + (f" {uuid.uuid4().hex[:10]}" if fresh else "")
                body = {"text": text, "k": 10, "explain": explain}
                out.append(("POST", "/v1/recommendations", json.dumps(body).encode()))
            return out

        return make

    users_metric = ("/v1/users/{user_id}/recommendations", "GET")
    anon_metric = ("/v1/recommendations", "POST")
    routes = {
        "healthz": Route(
            "healthz",
            lambda r, n: [("GET", "/healthz", None)] * n,
            ("/healthz", "GET"),
        ),
        "warm": Route("warm", user_reqs(warm, True), users_metric, "warm"),
        "warm-noexplain": Route("warm-noexplain", user_reqs(warm, False), users_metric, "warm"),
        "text-only": Route("text-only", user_reqs(text_users, True), users_metric, "text-only"),
        "text-only-noexplain": Route(
            "text-only-noexplain", user_reqs(text_users, False), users_metric, "text-only"
        ),
        "few-shot": Route("few-shot", user_reqs(few_users, True), users_metric, "few-shot"),
        "anonymous": Route("anonymous", anon_reqs(True, False), anon_metric, "anonymous"),
        "anonymous-noexplain": Route(
            "anonymous-noexplain", anon_reqs(False, False), anon_metric, "anonymous"
        ),
        "anonymous-new-text": Route(
            "anonymous-new-text", anon_reqs(False, True), anon_metric, "anonymous"
        ),
    }
    # First request per pool entry: text users and anonymous texts are encoded here (cold cache).
    first: dict[str, list[float]] = {"text-only": [], "few-shot": [], "anonymous": []}
    for u in text_users:
        code, body, ms = get_json(client, "GET", f"/v1/users/{u}/recommendations?k=10")
        assert code == 200 and body["route"] == "text-only", (code, body)
        first["text-only"].append(ms)
    for u in few_users:
        code, body, ms = get_json(client, "GET", f"/v1/users/{u}/recommendations?k=10")
        assert code == 200 and body["route"] == "few-shot", (code, body)
        first["few-shot"].append(ms)
    for t in texts:
        code, body, ms = get_json(client, "POST", "/v1/recommendations", {"text": t, "k": 10})
        assert code == 200 and body["route"] == "anonymous", (code, body)
        first["anonymous"].append(ms)
    code, body, _ = get_json(client, "GET", f"/v1/users/{warm[0]}/recommendations?k=10")
    assert code == 200 and body["route"] == "warm", (code, body)
    # The very first text request loads the encoder in the server: reported on its own.
    setup["first_text_request_ever_ms"] = first["text-only"].pop(0)
    setup["first_request_ms"] = {
        name: {
            "n": len(v),
            "p50": float(np.percentile(v, 50)),
            "p99": float(np.percentile(v, 99)),
            "max": float(np.max(v)),
        }
        for name, v in first.items()
    }
    return routes, setup


def route_checker(expect: str | None) -> Callable[[bytes], str | None] | None:
    """Spot-check (every 97th response) that the server routed the request as intended."""
    if expect is None:
        return None

    def check(body: bytes) -> str | None:
        got = json.loads(body).get("route")
        return None if got == expect else f"expected route {expect!r}, got {got!r}"

    return check


# ---- freshness ----------------------------------------------------------------------------
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


# ---- in-process profile --------------------------------------------------------------------
def timed(fn: Callable[[], Any], n: int, budget_s: float = 8.0) -> dict[str, float]:
    """p50/p99/mean wall milliseconds of up to n calls (fewer, at least 10, past `budget_s`)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < n and (len(times) < 10 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "calls": len(times),
    }


def top_functions(fn: Callable[[], Any], n: int, lines: int = 18, budget_s: float = 15.0) -> str:
    """cProfile of up to n calls of fn (fewer past `budget_s`), the top functions by own time."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    calls = 0
    prof.enable()
    while calls < n and (calls < 5 or time.perf_counter() - start < budget_s):
        fn()
        calls += 1
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    body = text[text.find("   ncalls") :] if "   ncalls" in text else text
    return f"{calls} calls\n{body}"


def inprocess_profile(
    model_dir: Path, tmp: Path, reps: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Time `Engine` calls on the same model in this process, piece by piece, with no HTTP.

    BLAS runs on one thread, as `warmstart serve` sets it (requests are its parallelism)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    os.environ["WARMSTART_CACHE_DIR"] = str(tmp / "inprocess-cache")
    threadpool_limits(1)
    import scipy.sparse as sp

    from warmstart.models import Recommender
    from warmstart.models.base import ProfileQuery
    from warmstart.models.cf import fold_in
    from warmstart.models.hybrid import WarmStartRecommender
    from warmstart.serve.engine import Engine
    from warmstart.serve.store import EventRecord, ItemRecord, UserRecord

    t0 = time.perf_counter()
    model = Recommender.load(model_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert isinstance(model, WarmStartRecommender)
    engine = Engine(model)
    index_s = time.perf_counter() - t0
    m = engine.model
    cat = m.catalogue
    counts = cat.user_counts()
    warm = [str(u) for u in np.asarray(cat.user_ids.to_list(), dtype=object)[counts > 0]]
    texts = profile_texts(rng, cat.item_text, 50)
    engine.upsert_users([UserRecord(f"text-{i}", t, {}) for i, t in enumerate(texts)])
    all_items = cat.item_ids.to_list()
    common = [str(all_items[i]) for i in np.flatnonzero(cat.item_counts() >= 5)]
    engine.add_events(
        EventRecord(f"few-{i}", str(item), "click", None, None, None)
        for i in range(50)
        for item in rng.choice(common, size=3, replace=False)
    )
    for t in texts:  # encode once: the profiled calls see cached embeddings, as the load did
        engine.recommend_profile(t, {}, [], explain=True)
    users = itertools.cycle(warm[:: max(1, len(warm) // 500)])
    text_users = itertools.cycle([f"text-{i}" for i in range(50)])
    few_users = itertools.cycle([f"few-{i}" for i in range(50)])
    text_cycle = itertools.cycle(texts)
    out: dict[str, Any] = {
        "code": code_version(),
        "threadpools": [
            {k: i.get(k) for k in ("user_api", "internal_api", "num_threads")}
            for i in threadpool_info()
        ],
        "model_load_s": load_s,
        "engine_build_s": index_s,
        "index": "hnsw" if not engine.index.is_exact else "exact",
        "items": engine.n_items,
        "item_vector_dim": int(m.item_vectors.shape[1]),
    }

    one_row = sp.csr_matrix(
        (np.full(3, 3.0, np.float32), ([0, 0, 0], [0, 1, 2])), shape=(1, cat.n_items)
    )
    q = np.ascontiguousarray(m.item_vectors[0])

    def respond() -> Any:
        """The warm route as the app answers it: engine, response model, JSON."""
        from warmstart.serve.routes.recommendations import recommendations_out as _recommendations

        user = next(users)
        return _recommendations(user, engine.recommend_user(user, k=10)).model_dump_json()

    calls: dict[str, Callable[[], Any]] = {
        "warm engine.recommend_user explain": lambda: engine.recommend_user(next(users), k=10),
        "warm engine.recommend_user no explain": lambda: engine.recommend_user(
            next(users), k=10, explain=False
        ),
        "warm index.search only": lambda: engine.index.search(
            m.user_vectors[int(np.flatnonzero(counts > 0)[0])], 10
        ),
        "warm + response model + JSON": respond,
        "text-only engine.recommend_user explain": lambda: engine.recommend_user(
            next(text_users), k=10
        ),
        "text-only engine.recommend_user no explain": lambda: engine.recommend_user(
            next(text_users), k=10, explain=False
        ),
        "few-shot engine.recommend_user explain": lambda: engine.recommend_user(
            next(few_users), k=10
        ),
        "anonymous engine.recommend_profile explain": lambda: engine.recommend_profile(
            next(text_cycle), {}, [], k=10
        ),
        "anonymous engine.recommend_profile no explain": lambda: engine.recommend_profile(
            next(text_cycle), {}, [], k=10, explain=False
        ),
        "anonymous model.score_profiles only": lambda: m.score_profiles(
            [ProfileQuery(text=next(text_cycle), attribute_text=None, items=np.empty(0, np.int64))]
        ),
        "catalogue.item_counts() (once per explained item)": lambda: cat.item_counts(),
        "cf.fold_in, one row of 3 items over item_cf (p_cf of a profile)": lambda: fold_in(
            m.item_cf, one_row, m.config.cf.regularization
        ),
        "cf.fold_in, one row over item_embeddings (text profile, if its weight > 0)": lambda: (
            fold_in(m.item_embeddings, one_row, m.config.text_profile_regularization)
        ),
        "item_vectors @ one vector (scoring the whole catalogue)": lambda: m.item_vectors @ q,
        "model.encode one cached text": lambda: m.encode([next(text_cycle)]),
        "catalogue.user_counts() (once per user request)": lambda: cat.user_counts(),
    }
    out["timings"] = {}
    for name, fn in calls.items():
        try:
            out["timings"][name] = timed(fn, reps)
        except ImportError as exc:
            out["timings"][name] = {"skipped": str(exc)}
    out["cprofile_warm_explain"] = top_functions(
        lambda: engine.recommend_user(next(users), k=10), reps
    )
    out["cprofile_anonymous_explain"] = top_functions(
        lambda: engine.recommend_profile(next(text_cycle), {}, [], k=10), reps
    )
    adds = []
    for j in range(5):
        rec = ItemRecord(f"inproc-new-{j}", f"Limited edition {' '.join(pseudo_words(rng, 6))}", {})
        t0 = time.perf_counter()
        engine.upsert_items([rec])
        adds.append(1e3 * (time.perf_counter() - t0))
    out["engine.upsert_items one item ms"] = adds
    out["cprofile_upsert_item"] = top_functions(
        lambda: engine.upsert_items(
            [ItemRecord(f"inproc-{uuid.uuid4().hex}", " ".join(pseudo_words(rng, 8)), {})]
        ),
        3,
        12,
    )
    return out


# ---- output ----------------------------------------------------------------------------
def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cols = [
        ("route", "route", 0),
        ("rate", "rate/s", 0),
        ("achieved_rate", "achieved", 1),
        ("p50_ms", "p50 ms", 1),
        ("p90_ms", "p90 ms", 1),
        ("p99_ms", "p99 ms", 1),
        ("max_ms", "max ms", 1),
        ("errors", "errors", 0),
        ("unsent", "unsent", 0),
        ("server_mean_ms", "in-app mean ms", 1),
        ("server_cpu_ms_per_req", "server CPU ms/req", 1),
        ("client_cpu_ms_per_req", "client CPU ms/req", 2),
        ("other_cores", "others' cores", 2),
    ]
    for _, head, _ in cols:
        table.add_column(head, justify="left" if head == "route" else "right")
    for row in rows:
        table.add_row(*[fmt(row.get(key), d) for key, _, d in cols])
    Console(stderr=False, width=200).print(table)


def saturated(row: dict[str, Any]) -> bool:
    """The server did not keep up: requests were dropped, or it answered under 95% of the rate."""
    rate = row["achieved_rate"]
    return row["unsent"] > 0 or rate is None or rate < 0.95 * row["rate"]


def plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    names = list(dict.fromkeys(r["route"] for r in rows))
    colours = plt.get_cmap("tab10")
    for j, name in enumerate(names):
        mine = sorted((r for r in rows if r["route"] == name), key=lambda r: r["rate"])
        rates = sorted({r["rate"] for r in mine})
        c = colours(j % 10)
        for key, style, alpha in (("p99_ms", "o-", 1.0), ("p50_ms", "s--", 0.6)):
            # the median over repeats; every repeat as a faint dot
            values = [
                [r[key] for r in mine if r["rate"] == x and r[key] is not None] for x in rates
            ]
            med = [float(np.median(v)) if v else None for v in values]
            label = f"{name} {key[:3]}"
            ax.plot(rates, med, style, color=c, alpha=alpha, label=label)
            if any(len(v) > 1 for v in values):
                xs = [x for x, v in zip(rates, values, strict=True) for _ in v]
                ax.plot(xs, [y for v in values for y in v], ".", color=c, alpha=0.3)
        over = [r for r in mine if saturated(r)]
        ax.plot(
            [r["rate"] for r in over],
            [r["p99_ms"] for r in over],
            "x",
            color="k",
            ms=10,
            label="overloaded (dropped, or achieved < 95%)" if j == 0 else None,
        )
    ax.axhline(TARGET_P99_MS, color="k", lw=0.8, ls=":", label=f"target p99 {TARGET_P99_MS:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel("latency (ms, from scheduled send)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    output.write_text(json.dumps(result, indent=2))


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


# ---- main ----------------------------------------------------------------------------
ALL_ROUTES = (
    "healthz",
    "warm",
    "warm-noexplain",
    "text-only",
    "text-only-noexplain",
    "few-shot",
    "anonymous",
    "anonymous-noexplain",
    "anonymous-new-text",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--catalogue", choices=("ml-100k", "synthetic-100k"), default="ml-100k")
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
    p.add_argument("--workdir", type=Path, default=None, help="where the fitted model is kept")
    p.add_argument("--refit", action="store_true", help="fit even if --workdir has the model")
    p.add_argument("--fit-only", action="store_true", help="fit (or find) the model and stop")
    p.add_argument("--profile-only", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--synthetic-items", type=int, default=100_000)
    p.add_argument("--synthetic-users", type=int, default=20_000)
    p.add_argument("--synthetic-interactions", type=int, default=1_000_000)
    p.add_argument("--synthetic-topics", type=int, default=200)
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
        output.write_text(json.dumps(out, indent=2))
        return

    result: dict[str, Any] = {
        "benchmark": "serve",
        "catalogue": args.catalogue,
        "command": command_line(),
        "machine": machine_info(),
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
        with serving(model_dir, tmp, server_env, args.startup_timeout) as server:
            result["server"] = {
                "code": code_version(),
                "argv": server.argv,
                "env": server.env,
                "startup_s": server.startup_s,
            }
            with httpx.Client(
                base_url=server.base_url, headers=auth_headers(), timeout=60
            ) as client:
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
                    t0 = time.perf_counter()
                    quiet = wait_quiet(args.quiet_wait, args.quiet_threshold)
                    fresh: dict[str, Any] = {
                        "idle": {
                            **freshness(client, rng, args.freshness_trials, "idle"),
                            **quiet,
                        }
                    }
                    log(f"freshness idle: {fresh['idle']}")
                    # The same under warm load at the target rate: the POSTs also show how long
                    # an item write holds up recommendations.
                    secs = args.freshness_trials * 0.45 + 6.0
                    reqs = routes["warm"].make(rng, int((args.warmup + secs) * TARGET_RATE))
                    box: dict[str, Phase] = {}

                    def background(reqs: list[Req] = reqs) -> None:
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
                    result["freshness"] = fresh
                    save(result, rows, output)
                    log(f"freshness under load: {fresh['under_warm_load']}")
                    log(f"warm load during item POSTs: {fresh['warm_load_during']}")
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
    output.write_text(json.dumps(result, indent=2))
    png = output.with_suffix(".png")
    plot(png, rows, f"warmstart serve, {args.catalogue} ({catalogue.n_items:,} items), loopback")
    print_table(
        f"{args.catalogue}: {catalogue.n_items:,} items, open loop over loopback "
        f"({result['machine']['nproc']} cores, {result['machine']['cpu_model']})",
        rows,
    )
    if "freshness" in result:
        for key in ("idle", "under_warm_load"):
            f = result["freshness"][key]
            print(
                f"freshness ({key}): item POST -> visible p50 {fmt(f['visible_p50_ms'])} ms, "
                f"max {fmt(f['visible_max_ms'])} ms over {f['trials']} trials "
                f"(not visible: {f['not_visible']}); POST ack p50 {fmt(f['post_ack_p50_ms'])} ms, "
                f"max {fmt(f['post_ack_max_ms'])} ms"
            )
        w = result["freshness"]["warm_load_during"]
        print(
            f"warm @ {TARGET_RATE:.0f}/s while items were POSTed: p50 {fmt(w['p50_ms'])} ms, "
            f"p99 {fmt(w['p99_ms'])} ms, max {fmt(w['max_ms'])} ms"
        )
    if "inprocess" in result and "error" in result["inprocess"]:
        print(f"in-process profile failed: {result['inprocess']['error']}")
    elif "inprocess" in result:
        ip = result["inprocess"]
        print(f"in-process ({ip['items']:,} items, {ip['index']} index, no HTTP):")
        for name, t in ip["timings"].items():
            if "p50_ms" in t:
                print(f"  {name:<72} p50 {t['p50_ms']:8.2f} ms  p99 {t['p99_ms']:8.2f} ms")
        adds = ", ".join(f"{x:.0f}" for x in ip["engine.upsert_items one item ms"])
        print(f"  engine.upsert_items, one new item: {adds} ms")
    if target:
        meets = "meets" if result["target"]["meets"] else "misses"
        print(
            f"warm users at {TARGET_RATE:.0f}/s: p99 {', '.join(f'{x:.1f}' for x in target)} ms "
            f"(median {result['target']['median']:.1f}); {meets} the {TARGET_P99_MS:.0f} ms target"
        )
    code = result["server"]["code"]
    changed = (
        f" + uncommitted changes to {code['src_changed_since']}"
        if code["src_changed_since"]
        else ""
    )
    print(f"code under test: commit {code['commit'][:10]}{changed}")
    print(f"wrote {output} and {png} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
