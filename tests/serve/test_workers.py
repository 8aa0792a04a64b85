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

from tests.serve.test_serve import (
    ADMIN,
    ADMIN_AUTH,
    AUTH,
    each_worker,
    free_port,
    serving_process,
)
from tests.synthetic import Synthetic


def _workers(base: str, n: int = 2, timeout: float = 120) -> set[int]:
    """The pids of `n` ready workers."""
    return set(each_worker(base, n, lambda c: None, timeout))


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


def _on(base: str, pid: int, method: str, path: str, timeout: float = 10, **kw: Any) -> Any:
    """The answer of worker `pid` (new connections until that worker takes one): its JSON, or
    its text for /metrics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
            if c.get("/readyz").json().get("worker") == pid:
                r = c.request(method, path, **kw)
                assert r.status_code == 200, r.text
                return r.text if path == "/metrics" else r.json()
    raise AssertionError(f"worker {pid} took no connection in {timeout} s")


def test_reload_and_experiments_reach_every_worker(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    from warmstart.serve.retrain import retrain

    port, db = free_port(), tmp_path / "a.db"
    base = f"http://127.0.0.1:{port}"
    retrained = tmp_path / "retrained"
    liked = [str(i) for i in data.items_of(1, cold=False)[:3]]
    args = ["--workers", "2", "--admin-key", ADMIN]
    with serving_process(model_dir, db, port, args=args) as proc:
        pids = _workers(base)
        with httpx.Client(base_url=base, headers=AUTH, timeout=60) as c:
            events = [{"user_id": "h", "item_id": i, "type": "click"} for i in liked]
            assert c.post("/v1/events", json={"events": events}).status_code == 200
        for pid in pids:
            assert _on(base, pid, "GET", "/v1/users/h/recommendations")["route"] == "few-shot"
        retrain(model_dir, f"sqlite:///{db}", retrained)

        # A reload through one worker: the other reloads the same folder from the store's log.
        with httpx.Client(base_url=base, headers=ADMIN_AUTH, timeout=120) as c:
            r = c.post("/v1/admin/reload", json={"model": str(retrained)})
            assert r.status_code == 200, r.text
        for pid in pids:
            deadline = time.monotonic() + 30
            while _on(base, pid, "GET", "/v1/users/h/recommendations")["route"] != "warm":
                assert time.monotonic() < deadline, f"worker {pid} did not reload"
                time.sleep(0.1)
        # A replacement worker serves the reloaded model too.
        os.kill(min(pids), signal.SIGKILL)
        fresh = _workers(base)
        for pid in fresh:
            assert _on(base, pid, "GET", "/v1/users/h/recommendations")["route"] == "warm"

        # An experiment started through one worker assigns the same arm on every worker.
        arms = [{"name": "a", "weight": 1.0}, {"name": "b", "weight": 1.0}]
        with httpx.Client(base_url=base, headers=ADMIN_AUTH, timeout=60) as c:
            r = c.post("/v1/experiments", json={"experiment_id": "e1", "arms": arms})
            assert r.status_code == 201, r.text
        users = [f"x{j}" for j in range(8)]
        lists = 0
        for pid in fresh:
            for user in users:
                path = f"/v1/users/{user}/recommendations"
                deadline = time.monotonic() + 10
                while (tag := _on(base, pid, "GET", path)["experiment"]) is None:
                    assert time.monotonic() < deadline, f"worker {pid} did not start e1"
                assert tag["experiment_id"] == "e1"
                assert tag == _on(base, min(fresh), "GET", path)["experiment"]
                lists += 2
        # Exposure counts of both workers reach the report (each writes its own every 2 s).
        time.sleep(2.5)
        report = _on(base, max(fresh), "GET", "/v1/experiments/e1")
        assert sum(a["impressions"] for a in report["arms"]) == lists
        with httpx.Client(base_url=base, headers=ADMIN_AUTH, timeout=60) as c:
            assert c.post("/v1/experiments/e1/stop").status_code == 200
        for pid in fresh:
            deadline = time.monotonic() + 10
            while _on(base, pid, "GET", "/v1/users/x0/recommendations")["experiment"] is not None:
                assert time.monotonic() < deadline, f"worker {pid} did not stop e1"

        # Prometheus metrics: a scrape of either worker counts the requests both answered.
        item = str(data.items_of(0, cold=False)[0])
        for pid in fresh:
            _on(base, pid, "GET", f"/v1/items/{item}/similar")
        time.sleep(1.5)  # the gauges are sampled once a second
        line = 'warmstart_requests_total{method="GET",route="/v1/items/{item_id}/similar",status="200"}'
        for pid in fresh:
            text = _on(base, pid, "GET", "/metrics")
            counts = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
            assert counts == [2.0], text
            items = [x for x in text.splitlines() if x.startswith("warmstart_catalogue_items ")]
            assert items == [f"warmstart_catalogue_items {float(data.n_items)}"], text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


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
