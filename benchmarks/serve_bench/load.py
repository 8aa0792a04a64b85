"""The open-loop load generator: a few client threads, one keep-alive connection each, send
requests on a fixed schedule and time each from when it was due (no coordinated omission)."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_bench.server import auth_headers, process_cpu_s, system_busy_s

Req = tuple[str, str, bytes | None]  # method, path, JSON body


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
