"""`warmstart serve --workers 2`: two processes behind one port over one store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.serve.test_serve import AUTH, free_port, serving_process
from tests.synthetic import Synthetic


def _ready(base: str) -> dict[str, Any]:
    """/readyz on a new connection, so that the kernel may hand it to either worker."""
    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.get("/readyz")
        return dict(r.json()) if r.status_code == 200 else {}


def _workers(base: str, n: int = 2, timeout: float = 120) -> set[int]:
    """The pids of `n` ready workers (new connections until each has answered)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < n:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        pid = _ready(base).get("worker")
        if pid:
            seen.add(int(pid))
        time.sleep(0.02)
    return seen


def _visible_on(base: str, pid: int, item: str, timeout: float = 10) -> bool:
    """Whether worker `pid` knows `item` (a profile naming it is 200, not 404), within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as c:
            if c.get("/readyz").json().get("worker") == pid:
                r = c.post("/v1/recommendations", json={"item_ids": [item], "k": 3})
                if r.status_code == 200:
                    return True
                assert r.status_code == 404, r.text
        time.sleep(0.01)
    return False


def test_two_workers_share_one_port_and_one_store(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving_process(model_dir, tmp_path / "w.db", port, args=["--workers", "2"]) as proc:
        pids = _workers(base)
        # A write through one worker: that worker answers from it at once, the other soon.
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
            writer = c.get("/readyz").json()["worker"]
            item = {"item_id": "posted", "text": data.group_text(2, seed=21)}
            assert c.post("/v1/items", json={"items": [item]}).status_code == 200
            r = c.post("/v1/recommendations", json={"item_ids": ["posted"], "k": 3})
            assert r.status_code == 200  # read-your-writes on the same worker
        (other,) = pids - {writer}
        assert _visible_on(base, other, "posted")

        # kill -9 of one worker: the survivor answers, a new worker replaces the dead one and
        # replays the store, so nothing acknowledged is lost.
        os.kill(other, signal.SIGKILL)
        for _ in range(20):
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
                r = c.post("/v1/recommendations", json={"item_ids": ["posted"], "k": 3})
                assert r.status_code == 200
        fresh = _workers(base)
        assert other not in fresh and writer in fresh
        (new,) = fresh - {writer}
        assert _visible_on(base, new, "posted")

        # SIGHUP is passed on: each worker reloads its model and goes on answering.
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert _workers(base) == fresh
        assert _visible_on(base, new, "posted") and _visible_on(base, writer, "posted")

        # SIGTERM to the server stops every worker.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        for pid in fresh:
            assert not _alive(pid), f"worker {pid} outlived the server"


def test_workers_stop_when_the_server_is_killed(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    with serving_process(model_dir, tmp_path / "k.db", port, args=["--workers", "2"]) as proc:
        pids = _workers(f"http://127.0.0.1:{port}")
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids):
            assert time.monotonic() < deadline, "workers outlived a killed server"
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_model_no_worker_can_serve_stops_the_server(tmp_path: Path) -> None:
    """Workers that cannot load the model are not restarted forever: the server exits."""
    missing = tmp_path / "no-model"
    port = free_port()
    cmd = [sys.executable, "-m", "warmstart.cli.main", "serve", "--model", str(missing)]
    cmd += ["--db", f"sqlite:///{tmp_path / 'm.db'}", "--port", str(port), "--workers", "2"]
    env = {**os.environ, "WARMSTART_API_KEYS": "k" * 12, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert str(missing) in done.stderr
