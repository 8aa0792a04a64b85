"""The HTTP service, tested through a real server on loopback (uvicorn in a thread, or a process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from tests.synthetic import GROUPS, Synthetic
from warmstart.errors import ModelFormatError
from warmstart.models import Recommender
from warmstart.models.cf import ALSRecommender
from warmstart.models.servable import ServableModel
from warmstart.serve.app import ServeSettings, create_app
from warmstart.serve.http import server_config
from warmstart.serve.service import servable

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN = "admin-key-456"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@contextmanager
def serving_url(model_dir: Path, db: Path | str, **settings: Any) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    cfg = ServeSettings(
        model_dir=model_dir,
        db_url=url,
        api_keys=(KEY,),  # type: ignore[arg-type]
        admin_keys=(ADMIN,),  # type: ignore[arg-type]
        **settings,
    )
    server, base = start_server(create_app(cfg), cfg)
    try:
        yield base
    finally:
        server.should_exit = True
        server.thread.join(timeout=10)  # type: ignore[attr-defined]


def start_server(app: Any, cfg: ServeSettings, ready: bool = True) -> tuple[uvicorn.Server, str]:
    """uvicorn as `warmstart serve` configures it, in a thread on a free port; once `ready`
    (when asked), i.e. once /readyz says the model is loaded."""
    config = server_config(
        app,
        host="127.0.0.1",
        port=0,
        header_timeout=cfg.header_timeout,
        max_header_bytes=cfg.max_header_bytes,
        max_connections=cfg.max_connections,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    server.thread = thread  # type: ignore[attr-defined]
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    while ready and httpx.get(f"{base}/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not get ready")
        time.sleep(0.02)
    return server, base


@contextmanager
def serving(model_dir: Path, db: Path | str, **settings: Any) -> Iterator[httpx.Client]:
    """`serving_url`, with a client for it."""
    with (
        serving_url(model_dir, db, **settings) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        yield client


@pytest.fixture()
def client(model_dir: Path, tmp_path: Path) -> Iterator[httpx.Client]:
    with serving(model_dir, tmp_path / "serve.db") as c:
        yield c


def _ids(body: dict[str, Any]) -> list[Any]:
    return [r["item_id"] for r in body["recommendations"]]


# ---- auth, health, metrics -------------------------------------------------------------
def test_health_needs_no_key_and_everything_else_does(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for method, path in [
        ("GET", "/metrics"),
        ("GET", "/v1/users/1000/recommendations"),
        ("GET", "/v1/items/item-000/similar"),
        ("POST", "/v1/recommendations"),
    ]:
        assert client.request(method, path).status_code == 401
        wrong = {"Authorization": "Bearer not-the-key"}
        assert client.request(method, path, headers=wrong).status_code == 401
    assert client.get("/v1/users/1000/recommendations", headers=AUTH).status_code == 200
    # admin routes: 401 without a key, 403 with an ordinary one
    assert client.post("/v1/admin/reload").status_code == 401
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 403
    spec = client.get("/openapi.json", headers=AUTH).json()
    assert "401" in spec["paths"]["/v1/events"]["post"]["responses"]
    assert "403" in spec["paths"]["/v1/admin/reload"]["post"]["responses"]


def test_metrics_count_requests_per_route(client: httpx.Client, data: Synthetic) -> None:
    for _ in range(3):
        client.get("/v1/users/1000/recommendations", headers=AUTH)
    client.post(
        "/v1/events",
        headers=AUTH,
        json={"events": [{"user_id": "u-1", "item_id": "item-001", "type": "click"}]},
    )
    text = client.get("/metrics", headers=AUTH).text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("warmstart_requests_total{")
        and 'route="/v1/users/{user_id}/recommendations"' in ln
    )
    assert line.endswith(" 3.0")
    assert (
        'warmstart_request_seconds_bucket{le="0.1",method="GET",route="/v1/users/{user_id}/recommendations"}'
        in text
    )
    assert 'warmstart_events_ingested_total{type="click"} 1.0' in text
    assert f"warmstart_catalogue_items {float(data.n_items)}" in text


def test_openapi_needs_a_key_and_no_docs_page_loads_outside_scripts(
    client: httpx.Client,
) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 401, path
    spec = client.get("/openapi.json", headers=AUTH).json()
    assert "/v1/users/{user_id}/recommendations" in spec["paths"]
    assert "/v1/events" in spec["paths"]
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        page = client.get(path, headers=AUTH)
        assert page.status_code == 404, path
        assert "cdn" not in page.text.lower()


# ---- routing -----------------------------------------------------------------------------
def test_warm_user_matches_the_model(
    client: httpx.Client, model_dir: Path, data: Synthetic
) -> None:
    model = Recommender.load(model_dir)
    user = data.warm_users_of(0)[0]
    body = client.get(f"/v1/users/{user}/recommendations?k=5", headers=AUTH).json()
    assert body["route"] == "warm"
    expected = model.recommend_one(user, k=5).row(0)
    assert _ids(body) == [i for i, _ in expected]
    np.testing.assert_allclose(
        [r["score"] for r in body["recommendations"]], [s for _, s in expected], rtol=1e-4
    )
    assert not set(_ids(body)) & data.history(user)


@pytest.mark.parametrize("threads", [1, 3])
def test_reads_run_at_most_read_threads_at_once_and_writes_pass_them(
    model_dir: Path, tmp_path: Path, data: Synthetic, threads: int
) -> None:
    """Six recommendation requests at once: at most `read_threads` are in the engine together,
    the rest wait their turn and all answer; a write sent meanwhile does not wait for them."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = ServeSettings(
        model_dir=model_dir,
        db_url=f"sqlite:///{tmp_path / 'reads.db'}",
        api_keys=(KEY,),  # type: ignore[arg-type]
        read_threads=threads,
    )
    app = create_app(cfg)
    server, base = start_server(app, cfg)
    engine = app.state.service.engine
    original = engine.recommend_user
    lock = threading.Lock()
    running, most = 0, 0

    def slow(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.3)
            return original(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    engine.recommend_user = slow
    users = [str(u) for u in data.warm_users[:6]]
    try:
        with ThreadPoolExecutor(len(users)) as pool:
            reads = [
                pool.submit(httpx.get, f"{base}/v1/users/{u}/recommendations", headers=AUTH)
                for u in users
            ]
            time.sleep(0.1)
            event = {"user_id": users[0], "item_id": data.items_of(0)[0], "type": "click"}
            write = httpx.post(f"{base}/v1/events", headers=AUTH, json={"events": [event]})
            reads_pending = sum(not r.done() for r in reads)
            codes = [r.result().status_code for r in reads]
    finally:
        server.should_exit = True
        server.thread.join(timeout=10)  # type: ignore[attr-defined]
    assert codes == [200] * len(users)
    assert most == threads
    assert write.status_code == 200 and reads_pending > 0


def test_read_threads_default_to_the_cores_shared_among_workers(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    settings = ServeSettings(model_dir=tmp_path, api_keys=(KEY,))  # type: ignore[arg-type]
    assert settings.reads_at_once() == cores
    assert settings.reads_at_once(workers=2) == max(1, cores // 2)
    assert settings.reads_at_once(workers=4 * cores) == 1  # never none
    given = settings.model_copy(update={"read_threads": 3})
    assert given.reads_at_once() == given.reads_at_once(workers=8) == 3


@pytest.mark.parametrize("exact_below", [20_000, 0], ids=["exact", "hnsw"])
def test_warm_blend_is_served_as_the_model_scores_it(
    data: Synthetic, tmp_path: Path, exact_below: int
) -> None:
    """With warm users' neighbour, popularity and new-item terms on, the service's top-k (all
    items, or the search's candidates plus neighbours and popular items) equals the library's."""
    from tests.synthetic import CF
    from warmstart.models.hybrid import WarmStartRecommender

    model = WarmStartRecommender(
        encoder="hashing",
        cf=CF,
        warm_neighbour_weight=1.0,
        warm_popularity_weight=0.5,
        new_item_boost=1.0,
    ).fit(data.dataset)
    assert model.blends_warm_users
    folder = model.save(tmp_path / "model")
    with serving(folder, tmp_path / "serve.db", exact_below=exact_below) as c:
        for user in data.warm_users[:6]:
            body = c.get(f"/v1/users/{user}/recommendations?k=5", headers=AUTH).json()
            assert body["route"] == "warm"
            expected = model.recommend_one(user, k=5).row(0)
            assert _ids(body) == [i for i, _ in expected]
            np.testing.assert_allclose(
                [r["score"] for r in body["recommendations"]],
                [s for _, s in expected],
                rtol=1e-4,
            )


def test_text_only_new_user_gets_their_group(client: httpx.Client, data: Synthetic) -> None:
    for g in range(len(GROUPS)):
        user = f"new-{g}"
        r = client.post(
            "/v1/users",
            headers=AUTH,
            json={"users": [{"user_id": user, "text": data.group_text(g)}]},
        )
        assert r.status_code == 200
        body = client.get(f"/v1/users/{user}/recommendations?k=10", headers=AUTH).json()
        assert body["route"] == "text-only"
        assert data.group_share(_ids(body), g) >= 0.8, (g, _ids(body))


def test_clicks_steer_a_new_user_and_seen_items_are_excluded(
    client: httpx.Client, data: Synthetic
) -> None:
    clicked = data.items_of(2, cold=False)[:3]
    events = [{"user_id": "shopper", "item_id": i, "type": "click"} for i in clicked]
    r = client.post("/v1/events", headers=AUTH, json={"events": events})
    assert r.json() == {"accepted": 3, "duplicates": 0}
    body = client.get("/v1/users/shopper/recommendations?k=10", headers=AUTH).json()
    assert body["route"] == "few-shot"
    assert data.group_share(_ids(body), 2) >= 0.8
    assert not set(_ids(body)) & set(clicked)
    explained = [r["explanation"] for r in body["recommendations"]]
    assert any(e["neighbours"] for e in explained)
    assert all(n["item_id"] in clicked for e in explained for n in e["neighbours"])
    seen = client.get("/v1/users/shopper/recommendations?k=10&exclude_seen=false", headers=AUTH)
    assert set(clicked) & set(_ids(seen.json()))


def test_events_fold_into_a_warm_user(client: httpx.Client, data: Synthetic) -> None:
    user = data.warm_users_of(0)[0]
    other = data.items_of(1, cold=False)
    events = [{"user_id": str(user), "item_id": i, "type": "purchase"} for i in other[:8]]
    client.post("/v1/events", headers=AUTH, json={"events": events})
    body = client.get(f"/v1/users/{user}/recommendations?k=10", headers=AUTH).json()
    assert body["route"] == "fold-in"
    assert not set(_ids(body)) & (data.history(user) | set(other[:8]))
    assert data.group_share(_ids(body), 1) > 0  # the new taste shows up


def test_unknown_user_gets_popular_items_and_404_on_profile(client: httpx.Client) -> None:
    body = client.get("/v1/users/nobody/recommendations?k=5", headers=AUTH).json()
    assert body["route"] == "popular" and len(body["recommendations"]) == 5
    assert client.get("/v1/users/nobody", headers=AUTH).status_code == 404


def test_popular_route_follows_deletes_and_reposts(client: httpx.Client) -> None:
    def popular() -> list[Any]:
        url = "/v1/users/nobody-else/recommendations?k=3&explain=false"
        return _ids(client.get(url, headers=AUTH).json())

    top = popular()[0]
    assert client.delete(f"/v1/items/{top}", headers=AUTH).status_code == 200
    assert top not in popular()
    item = {"item_id": top, "text": "posted again"}
    assert client.post("/v1/items", headers=AUTH, json={"items": [item]}).status_code == 200
    assert popular()[0] == top  # its interactions count again


def test_anonymous_visitor(client: httpx.Client, data: Synthetic) -> None:
    body = client.post(
        "/v1/recommendations", headers=AUTH, json={"text": data.group_text(1), "k": 10}
    ).json()
    assert body["route"] == "anonymous" and body["user_id"] is None
    assert data.group_share(_ids(body), 1) >= 0.8
    assert body["recommendations"][0]["explanation"]["text_similarity"] is not None
    picked = data.items_of(0, cold=False)[:2]
    body = client.post("/v1/recommendations", headers=AUTH, json={"item_ids": picked}).json()
    assert data.group_share(_ids(body), 0) >= 0.8 and not set(picked) & set(_ids(body))


# ---- items ---------------------------------------------------------------------------------
def test_new_item_is_recommendable_at_once(client: httpx.Client, data: Synthetic) -> None:
    text = data.group_text(0, n_words=8, seed=5)
    r = client.post(
        "/v1/items",
        headers=AUTH,
        json={"items": [{"item_id": "fresh-1", "text": text, "attributes": {"title": "Fresh"}}]},
    )
    assert r.json() == {"upserted": 1, "created": ["fresh-1"], "updated": []}
    body = client.post("/v1/recommendations", headers=AUTH, json={"text": text, "k": 5}).json()
    assert "fresh-1" in _ids(body)
    first = body["recommendations"][_ids(body).index("fresh-1")]
    assert "new item" in first["explanation"]["summary"]
    similar = client.get("/v1/items/fresh-1/similar?k=5", headers=AUTH).json()
    assert data.group_share([i["item_id"] for i in similar["items"]], 0) >= 0.8


def test_item_edit_moves_it_and_delete_removes_it(client: httpx.Client, data: Synthetic) -> None:
    space, cooking = data.group_text(0, 8, seed=7), data.group_text(2, 8, seed=7)
    client.post("/v1/items", headers=AUTH, json={"items": [{"item_id": "x", "text": space}]})
    r = client.post("/v1/items", headers=AUTH, json={"items": [{"item_id": "x", "text": cooking}]})
    assert r.json()["updated"] == ["x"]
    body = client.post("/v1/recommendations", headers=AUTH, json={"text": cooking, "k": 5}).json()
    assert "x" in _ids(body)
    assert client.delete("/v1/items/x", headers=AUTH).status_code == 200
    body = client.post("/v1/recommendations", headers=AUTH, json={"text": cooking, "k": 50}).json()
    assert "x" not in _ids(body)
    assert client.delete("/v1/items/x", headers=AUTH).status_code == 404
    assert client.get("/v1/items/x/similar", headers=AUTH).status_code == 404
    # posting it again brings it back
    client.post("/v1/items", headers=AUTH, json={"items": [{"item_id": "x", "text": cooking}]})
    body = client.post("/v1/recommendations", headers=AUTH, json={"text": cooking, "k": 5}).json()
    assert "x" in _ids(body)


def test_item_with_attributes_only(client: httpx.Client, data: Synthetic) -> None:
    words = data.group_text(1, 8, seed=9)
    item = {"item_id": "attr-1", "attributes": {"title": "Romance", "text": words}}
    assert client.post("/v1/items", headers=AUTH, json={"items": [item]}).status_code == 200
    body = client.post("/v1/recommendations", headers=AUTH, json={"text": words, "k": 5}).json()
    assert "attr-1" in _ids(body)


# ---- events -------------------------------------------------------------------------------
def test_events_are_idempotent_by_id(client: httpx.Client) -> None:
    e = {"event_id": "e-1", "user_id": "u", "item_id": "item-001", "type": "view"}
    assert client.post("/v1/events", headers=AUTH, json={"events": [e, e]}).json() == {
        "accepted": 1,
        "duplicates": 1,
    }
    assert client.post("/v1/events", headers=AUTH, json={"events": [e]}).json() == {
        "accepted": 0,
        "duplicates": 1,
    }
    assert client.get("/v1/users/u", headers=AUTH).json()["interactions"] == 1


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "/v1/items", {"items": [{"text": "no id"}]}, 422, "item_id"),
        ("POST", "/v1/items", {"items": [{"item_id": "  ", "text": "blank id"}]}, 422, "item_id"),
        ("POST", "/v1/items", {"items": [{"item_id": "a"}]}, 422, "items"),
        ("POST", "/v1/items", {"items": [{"item_id": "a/b", "text": "x"}]}, 422, "item_id"),
        (
            "POST",
            "/v1/items",
            {
                "items": [
                    {"item_id": "a", "text": "ok"},
                    {"item_id": "b", "attributes": {"x": None}},
                ]
            },
            422,
            '"loc":["body","items",1,"text"]',
        ),
        ("POST", "/v1/items", {"items": []}, 422, "items"),
        ("POST", "/v1/items", {"items": [{"item_id": "a", "text": 5}]}, 422, "text"),
        ("POST", "/v1/items", {"itemz": []}, 422, "itemz"),
        ("POST", "/v1/users", {"users": [{"user_id": "a", "text": ["x"]}]}, 422, "text"),
        (
            "POST",
            "/v1/events",
            {"events": [{"user_id": "u", "item_id": "item-001", "type": "like"}]},
            422,
            "type",
        ),
        (
            "POST",
            "/v1/events",
            {"events": [{"user_id": "u", "item_id": "item-001", "type": "rating"}]},
            422,
            "events",
        ),
        (
            "POST",
            "/v1/events",
            {"events": [{"user_id": "u", "item_id": "no-such-item", "type": "click"}]},
            404,
            "events[0].item_id",
        ),
        ("POST", "/v1/recommendations", {"k": 0}, 422, "k"),
        ("POST", "/v1/recommendations", {"item_ids": ["no-such-item"]}, 404, "no-such-item"),
        ("GET", "/v1/users/1000/recommendations?k=0", None, 422, "k"),
        ("GET", "/v1/users/1000/recommendations?k=1001", None, 422, "k"),
        ("GET", "/v1/users/1000/recommendations?k=ten", None, 422, "k"),
        ("GET", "/v1/items/no-such-item/similar", None, 404, "no-such-item"),
        ("DELETE", "/v1/items/no-such-item", None, 404, "no-such-item"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    client: httpx.Client, method: str, path: str, body: Any, status: int, field: str
) -> None:
    r = client.request(method, path, headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert field in r.text


def test_malformed_json_and_oversized_batches(model_dir: Path, tmp_path: Path) -> None:
    with serving(model_dir, tmp_path / "s.db", max_batch=5, max_body_bytes=4096) as c:
        r = c.post("/v1/items", headers={**AUTH, "Content-Type": "application/json"}, content="{")
        assert r.status_code == 422 and "json" in r.text.lower()
        items = [{"item_id": f"i{j}", "text": "words"} for j in range(6)]
        r = c.post("/v1/items", headers=AUTH, json={"items": items})
        assert r.status_code == 413 and "items" in r.text
        r = c.post(
            "/v1/items", headers=AUTH, json={"items": [{"item_id": "a", "text": "x" * 5000}]}
        )
        assert r.status_code == 413


# ---- durability ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving_process(
    model_dir: Path,
    db: Path,
    port: int,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`warmstart serve` as a real process (so it can be killed with SIGKILL)."""
    env = {**os.environ, "WARMSTART_API_KEYS": KEY, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "warmstart.cli.main", "serve", "--model", str(model_dir)]
    cmd += ["--db", f"sqlite:///{db}", "--port", str(port), "--log-level", "warning"]
    cmd += args or []
    # A session of its own: with --workers, the parent and its workers are one process group.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server did not start: {err[-2000:]}")
            time.sleep(0.1)
        # With --workers N the port answers once one worker is ready: wait for all of them.
        workers = int(args[args.index("--workers") + 1]) if "--workers" in (args or []) else 1
        each_worker(f"http://127.0.0.1:{port}", workers, lambda c: None, timeout=120)
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def each_worker(
    base: str, workers: int, read: Callable[[httpx.Client], Any], timeout: float = 60
) -> dict[int, Any]:
    """`read` answered by each of `workers` processes: new connections (which the kernel hands
    to any worker) until every worker's pid has been seen, reading on the same connection."""
    out: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(out) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(out)} answered"
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as c:
            ready = c.get("/readyz")
            pid = int(ready.json()["worker"]) if ready.status_code == 200 else None
            if pid is not None and pid not in out:
                out[pid] = read(c)
        time.sleep(0.01)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_and_restart_loses_nothing(
    model_dir: Path, tmp_path: Path, data: Synthetic, workers: int
) -> None:
    db, port = tmp_path / "durable.db", free_port()
    base = f"http://127.0.0.1:{port}"
    text = data.group_text(2, 8, seed=11)
    clicked = data.items_of(1, cold=False)[:3]
    args = ["--workers", str(workers)]
    with serving_process(model_dir, db, port, args=args) as proc:
        # New connections: with two workers each write may land on either of them.
        item = {"item_id": "new-dish", "text": text}
        assert (
            httpx.post(f"{base}/v1/items", headers=AUTH, json={"items": [item]}).status_code == 200
        )
        httpx.delete(f"{base}/v1/items/{clicked[-1]}", headers=AUTH)
        httpx.post(
            f"{base}/v1/users",
            headers=AUTH,
            json={"users": [{"user_id": "v", "text": data.group_text(1)}]},
        )
        events = [{"user_id": "v", "item_id": i, "type": "click"} for i in clicked[:2]]
        r = httpx.post(f"{base}/v1/events", headers=AUTH, json={"events": events})
        # Every worker answers as of the last write (the client sends back its seq).
        seq = {"X-Warmstart-Seq": r.headers["X-Warmstart-Seq"]}
        path = "/v1/users/v/recommendations?k=10"
        answers = each_worker(base, workers, lambda c: c.get(path, headers=seq).json())
        before = next(iter(answers.values()))
        assert all(a == before for a in answers.values())
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and every worker at once
        proc.wait(timeout=30)
    with serving_process(model_dir, db, port, args=args):
        answers = each_worker(base, workers, lambda c: c.get(path).json())
        assert all(after == before for after in answers.values())
        assert before["route"] == "few-shot"
        body = httpx.post(
            f"{base}/v1/recommendations", headers=AUTH, json={"text": text, "k": 5}
        ).json()
        assert "new-dish" in _ids(body)
        assert httpx.get(f"{base}/v1/items/{clicked[-1]}/similar", headers=AUTH).status_code == 404


def test_hnsw_graphs_are_saved_and_reused_on_restart(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    graphs = tmp_path / "graphs"
    text = data.group_text(2, 8, seed=5)
    answers, files = [], []
    for _ in range(2):
        with serving(model_dir, tmp_path / "g.db", exact_below=10, index_cache=graphs) as c:
            r = c.post("/v1/recommendations", headers=AUTH, json={"text": text, "k": 10})
            assert r.status_code == 200
            answers.append(r.json())
            similar = c.get(f"/v1/items/{data.items_of(2, cold=False)[0]}/similar", headers=AUTH)
            assert similar.status_code == 200
        # one graph each for recommendations, similar items and newcomers' text
        files.append({p.name: p.stat().st_ino for p in graphs.glob("*.usearch")})
    assert len(files[0]) == 3
    assert files[1] == files[0]  # the restart loaded both files: none was written again
    # Each saved graph holds the whole catalogue (built in one batch, not its first slice).
    from usearch.index import Index

    n_items = Recommender.load(model_dir).catalogue.n_items
    sizes = [Index.restore(str(graphs / name), view=True).size for name in files[0]]
    assert sizes == [n_items] * 3
    assert answers[0] == answers[1]


def test_newcomers_above_exact_below_are_scored_on_candidates(
    model_dir: Path, data: Synthetic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HNSW engines score newcomers on candidates; with every item a candidate and in the
    reference sample that is the exact answer, and with a few it stays close."""
    from warmstart.serve import engine as engine_module
    from warmstart.serve.engine import Engine
    from warmstart.serve.store import EventRecord, UserRecord

    def engines() -> tuple[Engine, Engine]:
        pair = []
        for below in (10_000, 10):
            e = Engine(Recommender.load(model_dir), exact_below=below)
            e.upsert_users([UserRecord(user_id="t", text=data.group_text(0), attributes={})])
            clicks = data.items_of(1, cold=False)[:3]
            e.add_events([EventRecord(user_id="f", item_id=i, type="click") for i in clicks])
            pair.append(e)
        assert pair[0].index.is_exact and not pair[1].index.is_exact
        return pair[0], pair[1]

    def answers(e: Engine, k: int) -> list[Any]:
        return [
            e.recommend_user("t", k=k, explain=False),
            e.recommend_user("f", k=k, explain=False),
            e.recommend_profile(data.group_text(2, seed=3), None, [], k=k, explain=False),
        ]

    exact, approx = engines()
    for a, b in zip(answers(exact, 10), answers(approx, 10), strict=True):
        assert a.route == b.route and a.item_ids == b.item_ids
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)

    monkeypatch.setattr(engine_module, "CANDIDATES", 8)
    exact, approx = engines()
    for a, b in zip(answers(exact, 5), answers(approx, 5), strict=True):
        assert len(set(a.item_ids) & set(b.item_ids)) >= 4
    clicked = set(data.items_of(1, cold=False)[:3])
    assert not clicked & set(approx.recommend_user("f", k=5).item_ids)  # seen stays excluded
    everything = [str(i) for i in data.items["item_id"]]
    approx.add_events([EventRecord(user_id="all", item_id=i, type="click") for i in everything])
    assert approx.recommend_user("all", k=5).item_ids == []  # nothing left to recommend


# ---- PostgreSQL ---------------------------------------------------------------------------
@pytest.mark.skipif(
    not os.environ.get("WARMSTART_TEST_POSTGRES_URL"),
    reason="set WARMSTART_TEST_POSTGRES_URL (.ci/postgres.sh starts a server) to test PostgreSQL",
)
def test_postgresql_backend_restores_state(model_dir: Path, data: Synthetic) -> None:
    import sqlalchemy as sa

    url = os.environ["WARMSTART_TEST_POSTGRES_URL"]
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS items, users, events, meta CASCADE"))
    engine.dispose()
    text = data.group_text(0, 8, seed=3)
    with serving(model_dir, url) as c:
        c.post("/v1/items", headers=AUTH, json={"items": [{"item_id": "pg-item", "text": text}]})
        c.post(
            "/v1/events",
            headers=AUTH,
            json={"events": [{"user_id": "pg-user", "item_id": "pg-item", "type": "click"}]},
        )
    with serving(model_dir, url) as c:
        body = c.post("/v1/recommendations", headers=AUTH, json={"text": text, "k": 5}).json()
        assert "pg-item" in _ids(body)
        assert c.get("/v1/users/pg-user", headers=AUTH).json()["interactions"] == 1


# ---- retrain and reload -------------------------------------------------------------------
def test_retrain_then_reload_swaps_models_without_dropping_requests(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    from warmstart.serve.retrain import retrain

    db = tmp_path / "r.db"
    text = data.group_text(0, 8, seed=21)
    liked = data.items_of(2, cold=False)[:3]
    with serving(model_dir, db) as c:
        c.post("/v1/items", headers=AUTH, json={"items": [{"item_id": "new-x", "text": text}]})
        events = [{"user_id": "r-user", "item_id": i, "type": "click"} for i in [*liked, "new-x"]]
        c.post("/v1/events", headers=AUTH, json={"events": events})
        assert c.get("/v1/users/r-user/recommendations", headers=AUTH).json()["route"] == "few-shot"

        folder, last = retrain(model_dir, f"sqlite:///{db}", tmp_path / "v2")
        assert last == 4 and (folder / "serve.json").is_file()

        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                statuses.append(c.get("/v1/users/1000/recommendations", headers=AUTH).status_code)
                r = c.post("/v1/recommendations", headers=AUTH, json={"text": text, "k": 5})
                statuses.append(r.status_code)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            time.sleep(0.2)
            r = c.post("/v1/admin/reload", headers=ADMIN_AUTH, json={"model": str(folder)})
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        assert r.status_code == 200, r.text
        assert r.json()["items"] == data.n_items + 1 and r.json()["model"] == str(folder)
        assert len(statuses) > 4 and set(statuses) == {200}

        # The events are training data now: the user is warm, and the new item has neighbours.
        body = c.get("/v1/users/r-user/recommendations", headers=AUTH).json()
        assert body["route"] == "warm"
        assert not set(_ids(body)) & {*liked, "new-x"}
        assert c.get("/v1/items/new-x/similar", headers=AUTH).status_code == 200
        # An event after the retrain is folded in on top.
        more = [{"user_id": "r-user", "item_id": data.items_of(2, cold=False)[5], "type": "view"}]
        c.post("/v1/events", headers=AUTH, json={"events": more})
        assert c.get("/v1/users/r-user/recommendations", headers=AUTH).json()["route"] == "fold-in"

        bad = c.post("/v1/admin/reload", headers=ADMIN_AUTH, json={"model": str(tmp_path / "nope")})
        assert bad.status_code == 422 and "model" in bad.text
        assert c.get("/readyz").json()["items"] == data.n_items + 1


def test_sighup_reloads_a_model_retrained_in_place(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    import shutil

    from warmstart.serve.retrain import retrain

    served = tmp_path / "served"
    shutil.copytree(model_dir, served)
    db, port = tmp_path / "h.db", free_port()
    base = f"http://127.0.0.1:{port}"
    liked = data.items_of(1, cold=False)[:3]

    def route() -> str:
        r = httpx.get(f"{base}/v1/users/h/recommendations", headers=AUTH)
        return str(r.json()["route"])

    with serving_process(served, db, port) as proc:
        events = [{"user_id": "h", "item_id": i, "type": "click"} for i in liked]
        httpx.post(f"{base}/v1/events", headers=AUTH, json={"events": events})
        assert route() == "few-shot"
        retrain(served, f"sqlite:///{db}", served)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while route() != "warm":
            assert time.monotonic() < deadline, "SIGHUP did not reload the model"
            time.sleep(0.2)
        assert proc.poll() is None


# ---- A/B experiments ----------------------------------------------------------------------
def test_experiment_arms_are_sticky_and_counted(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    import shutil

    from warmstart.serve.experiments import assign

    variant = tmp_path / "variant-model"
    shutil.copytree(model_dir, variant)
    arms = [
        {"name": "control", "weight": 1.0},
        {"name": "other-model", "weight": 1.0, "model": str(variant)},
        {"name": "no-prior", "weight": 2.0, "neighbour_weight": 0.0, "popularity_weight": 0.0},
    ]
    db = tmp_path / "ab.db"
    users = [f"ab-{j}" for j in range(30)]
    with serving(model_dir, db) as c:
        r = c.post(
            "/v1/experiments", headers=ADMIN_AUTH, json={"experiment_id": "exp1", "arms": arms}
        )
        assert r.status_code == 201, r.text
        exp2 = {"experiment_id": "exp2", "arms": arms}
        assert c.post("/v1/experiments", headers=AUTH, json=exp2).status_code == 403
        again = c.post("/v1/experiments", headers=ADMIN_AUTH, json=exp2)
        assert again.status_code == 409 and "exp1" in again.text
        # posted after the start: every arm's model must see the new item
        text = data.group_text(0, 8, seed=31)
        c.post("/v1/items", headers=AUTH, json={"items": [{"item_id": "ab-item", "text": text}]})
        c.post(
            "/v1/users",
            headers=AUTH,
            json={"users": [{"user_id": u, "text": text} for u in users]},
        )
        shown: dict[str, int] = {}
        lists: dict[str, int] = {}
        arm_of: dict[str, str] = {}
        for u in users:
            for _ in range(2):
                body = c.get(f"/v1/users/{u}/recommendations?k=5", headers=AUTH).json()
                arm = body["experiment"]["arm"]
                assert arm_of.setdefault(u, arm) == arm  # sticky
                assert arm == assign("exp1", u, arms)["name"]
                assert "ab-item" in _ids(body)
                shown[arm] = shown.get(arm, 0) + len(body["recommendations"])
                lists[arm] = lists.get(arm, 0) + 1
        assert set(arm_of.values()) == {"control", "other-model", "no-prior"}
        clickers = users[:10]
        events = [{"user_id": u, "item_id": "ab-item", "type": "click"} for u in clickers]
        c.post("/v1/events", headers=AUTH, json={"events": events})
        report = c.get("/v1/experiments/exp1", headers=AUTH).json()
        assert report["status"] == "running"
        by_arm = {a["name"]: a for a in report["arms"]}
        for name in by_arm:
            assert by_arm[name]["impressions"] == lists.get(name, 0)
            assert by_arm[name]["items_shown"] == shown.get(name, 0)
            assert by_arm[name]["users"] == sum(a == name for a in arm_of.values())
            assert by_arm[name]["clicks"] == sum(arm_of[u] == name for u in clickers)
        stopped = c.post("/v1/experiments/exp1/stop", headers=ADMIN_AUTH).json()
        assert stopped["status"] == "stopped"
        assert (
            c.get(f"/v1/users/{users[0]}/recommendations", headers=AUTH).json()["experiment"]
            is None
        )
        assert c.get("/v1/experiments/nope", headers=AUTH).status_code == 404
    with serving(model_dir, db) as c:  # the counts were written, and survive a restart
        report = c.get("/v1/experiments/exp1", headers=AUTH).json()
        assert sum(a["impressions"] for a in report["arms"]) == 2 * len(users)


def test_experiment_with_a_bad_model_folder_is_refused(model_dir: Path, tmp_path: Path) -> None:
    arms = [{"name": "a"}, {"name": "b", "model": str(tmp_path / "missing")}]
    with serving(model_dir, tmp_path / "x.db") as c:
        r = c.post("/v1/experiments", headers=ADMIN_AUTH, json={"experiment_id": "e", "arms": arms})
        assert r.status_code == 422 and "model" in r.text
        dup = [{"name": "a"}, {"name": "a"}]
        r = c.post("/v1/experiments", headers=ADMIN_AUTH, json={"experiment_id": "e", "arms": dup})
        assert r.status_code == 422 and "distinct" in r.text
        assert c.get("/v1/users/1000/recommendations", headers=AUTH).json()["experiment"] is None


def test_only_text_placing_models_are_servable(
    data: Synthetic, model_dir: Path, tmp_path: Path
) -> None:
    """The engine's protocol: warmstart offers all of it, a model without text does not, and the
    service refuses that one saying what to fit instead."""
    als = ALSRecommender(factors=8, iterations=2).fit(data.dataset)
    assert isinstance(Recommender.load(model_dir), ServableModel)
    assert not isinstance(als, ServableModel)
    with pytest.raises(ModelFormatError, match="fit one with"):
        servable(als, tmp_path / "als")
