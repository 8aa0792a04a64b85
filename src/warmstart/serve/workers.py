"""`warmstart serve --workers N`: N service processes behind one listening socket.

The parent binds the port once and starts N workers (spawned, not forked: a fork would copy a
loaded model's threads and locks in whatever state they were). Each worker is a whole service:
it loads the model, replays the store and then follows the store's change log, so a write
acknowledged by one worker is applied by the others within their poll interval, and the worker
that took it answers from it at once. The kernel hands each new connection to one of the
workers accepting on the shared socket.

The parent restarts a worker that dies (`kill -9` loses nothing: every acknowledged write is in
the store, and the new worker replays it), stops every worker on SIGTERM or SIGINT, and passes
SIGHUP on (each worker then reloads its model). A worker that cannot load the model stops the
whole server: the next one would fail the same way.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from warmstart.errors import WarmstartError
from warmstart.serve.service import ServeSettings
from warmstart.serve.store import Store

log = logging.getLogger("warmstart.serve")

_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOAD_FAILED = 2  # a worker's exit status when the model could not be served
_RESTART_PAUSE = 1.0  # seconds between restarts of workers that keep dying


def serve(config: ServeSettings, *, host: str, port: int, level: str) -> bool:
    """Serve in this process until stopped; False when the model could not be loaded."""
    return _run(config, host=host, port=port, level=level, sock=None)


def serve_workers(config: ServeSettings, *, host: str, port: int, level: str, workers: int) -> bool:
    """Serve with `workers` processes on one port until SIGTERM or SIGINT; False when the model
    could not be loaded."""
    if config.reloads_since is None:
        # A model reloaded from now on is what every worker started later must serve too.
        with Store.open(config.db_url) as store:
            config = config.model_copy(update={"reloads_since": store.last_change()})
    try:
        sock = socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        raise WarmstartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    metrics_dir = _metrics_dir()
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    procs: list[BaseProcess] = []

    def start() -> BaseProcess:
        p = ctx.Process(
            target=_worker, args=(config, host, port, level, sock), name="warmstart-worker"
        )
        p.start()
        log.info("worker %d started", p.pid)
        return p

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    def on_hangup(signum: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                _signal(p.pid, signal.SIGHUP)

    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    failed = False
    try:
        procs.extend(start() for _ in range(workers))
        while not stopping.wait(0.2):
            for j, p in enumerate(procs):
                if p.is_alive():
                    continue
                if p.exitcode == LOAD_FAILED:
                    log.error("worker %d could not load the model; stopping", p.pid)
                    failed = True
                    stopping.set()
                    break
                log.warning("worker %d exited with %s; starting another", p.pid, p.exitcode)
                _forget(p)
                time.sleep(_RESTART_PAUSE)
                procs[j] = start()
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                _signal(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(_METRICS_ENV, None)
    return not failed


def _metrics_dir() -> str | None:
    """Where the workers write their Prometheus values (prometheus_client's multiprocess
    mode), so a scrape of any worker reports all; a new folder, removed at exit, unless
    PROMETHEUS_MULTIPROC_DIR names one already (then it is the caller's to empty)."""
    if os.environ.get(_METRICS_ENV):
        return None
    folder = tempfile.mkdtemp(prefix="warmstart-metrics-")
    os.environ[_METRICS_ENV] = folder  # spawned workers inherit it
    return folder


def _forget(p: BaseProcess) -> None:
    """Drop a dead worker's live gauges (its counters still count)."""
    from prometheus_client import multiprocess

    if p.pid is not None:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(p.pid)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        os.kill(pid, sig)


def _worker(config: ServeSettings, host: str, port: int, level: str, sock: socket.socket) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("warmstart").setLevel(level.upper())
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    try:
        ok = _run(config, host=host, port=port, level=level, sock=sock)
    except Exception as exc:  # the store or the model folder cannot be used: say why, once
        log.error("cannot serve: %s", exc)
        ok = False
    sys.exit(0 if ok else LOAD_FAILED)


def _orphan_watch(parent: int) -> None:
    """Stop this worker (gracefully) once its parent is gone, e.g. killed with SIGKILL: a
    worker nobody supervises would hold the port and serve alone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _run(
    config: ServeSettings, *, host: str, port: int, level: str, sock: socket.socket | None
) -> bool:
    import uvicorn
    from threadpoolctl import threadpool_limits

    from warmstart.serve.app import create_app
    from warmstart.serve.http import server_config

    # Requests run in parallel on the thread pool; a BLAS that also splits each small product
    # over both cores spends more time spinning than computing (ML-100K, warm users at 100
    # requests/s: 17 ms of CPU per request with 2 BLAS threads, 8 ms with 1; BENCHMARKS.md).
    threadpool_limits(1)
    failed = threading.Event()

    def stop() -> None:
        failed.set()
        server.should_exit = True

    application = create_app(config, on_load_failure=stop)
    server = uvicorn.Server(
        server_config(
            application,
            host=host,
            port=port,
            header_timeout=config.header_timeout,
            max_header_bytes=config.max_header_bytes,
            max_connections=config.max_connections,
            log_level=level,
        )
    )
    server.run(sockets=None if sock is None else [sock])
    return not failed.is_set()
