"""Several serving processes over one store: each applies the others' writes from its log."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from tests.serve.test_serve import AUTH, KEY, serving, start_server
from tests.synthetic import Synthetic
from warmstart.models import Recommender
from warmstart.serve.experiments import ExperimentConflict
from warmstart.serve.service import ServeSettings, Service, servable
from warmstart.serve.store import EventRecord, ExperimentRecord, ItemRecord, Store, UserRecord


def _service(model_dir: Path, url: str, reloads_since: int | None = None) -> Service:
    settings = ServeSettings(
        model_dir=model_dir, db_url=url, api_keys=("k" * 12,), reloads_since=reloads_since
    )
    service = Service(settings, Store.open(url), servable(Recommender.load(model_dir), model_dir))
    service.load()
    return service


@pytest.fixture
def pair(model_dir: Path, url: str) -> Iterator[tuple[Service, Service]]:
    """Two services on one database, as two workers (or replicas) of `warmstart serve` are."""
    a, b = _service(model_dir, url), _service(model_dir, url)
    try:
        yield a, b
    finally:
        a.store.close()
        b.store.close()


def test_a_write_through_one_is_applied_by_the_other(
    pair: tuple[Service, Service], data: Synthetic
) -> None:
    a, b = pair
    text = data.group_text(2, seed=11)
    a.upsert_items([ItemRecord("fresh", text, {})])
    a.upsert_users([UserRecord("newcomer", data.group_text(1), {})])
    clicks = [str(i) for i in data.items_of(0, cold=False)[:3]]
    a.add_events([EventRecord("clicker", i, "click") for i in clicks])
    gone = str(data.items_of(1, cold=False)[0])
    a.delete_item(gone)
    assert not b.engine.has_item("fresh") and b.engine.has_item(gone)
    assert b.catch_up() == 4  # one entry per write: item, user, events batch, deletion
    for s in (a, b):
        assert s.engine.has_item("fresh") and not s.engine.has_item(gone)
    for user in ("newcomer", "clicker"):
        assert a.engine.recommend_user(user) == b.engine.recommend_user(user)
    assert a.engine.recommend_profile(text, None, []) == b.engine.recommend_profile(text, None, [])
    assert b.catch_up() == 0 and b.applied_seq == a.store.last_change()
    # The writer counts its own entries applied when nothing else lies between them.
    assert a.applied_seq == a.store.last_change() and a.catch_up() == 0
    # Entries applied again (as after a crash between two marks) change nothing.
    before = a.engine.snapshot
    a.applied_seq = 0
    assert a.catch_up() == 4
    assert a.engine.snapshot is before


class _Refusing:
    """An encoder that fails the test if it is asked for anything."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim = name, dim

    def encode(self, texts: object, **_: object) -> np.ndarray:
        raise AssertionError(f"encoded again: {texts!r}")


def test_a_posted_item_is_encoded_once_and_every_process_holds_its_bits(
    pair: tuple[Service, Service], data: Synthetic
) -> None:
    a, b = pair
    texts = [data.group_text(g, seed=40 + g) for g in range(3)]
    a.upsert_items([ItemRecord(f"posted-{j}", t, {}) for j, t in enumerate(texts)])
    stored = a.store.get_item("posted-0")
    assert stored is not None and stored.encoder == a.engine.encoder_name
    cache = b.engine.text_cache
    cache.disk, cache.encoder = None, _Refusing(cache.name, cache.dim)  # type: ignore[assignment]
    assert b.catch_up() == 3  # an entry per item
    for j in range(3):
        rows = [s.engine.model.item_embeddings[s.engine.item(f"posted-{j}")] for s in (a, b)]
        assert rows[0].tobytes() == rows[1].tobytes()
    # An edit of the attributes alone encodes nothing: the stored vector is the one held.
    held = a.engine.model.item_embeddings[a.engine.item("posted-1")].tobytes()
    a_cache = a.engine.text_cache
    real = a_cache.disk, a_cache.encoder
    a_cache.disk, a_cache.encoder = None, _Refusing(a_cache.name, a_cache.dim)  # type: ignore[assignment]
    a.upsert_items([ItemRecord("posted-1", texts[1], {"colour": "red"})])
    edited = a.store.get_item("posted-1")
    assert edited is not None and edited.vector == held and edited.attributes == {"colour": "red"}
    a_cache.disk, a_cache.encoder = real
    assert b.catch_up() == 1
    # A vector some other encoder made is not used: that process encodes the text itself.
    a.upsert_items([ItemRecord("other", texts[0] + " again", {})])
    with a.store._engine.begin() as conn:
        conn.execute(text("UPDATE items SET encoder = 'another' WHERE item_id = 'other'"))
    with pytest.raises(AssertionError, match="encoded again"):
        b.catch_up()


def test_a_restarted_process_resumes_from_the_store(
    pair: tuple[Service, Service], model_dir: Path, data: Synthetic
) -> None:
    a, b = pair
    a.upsert_items([ItemRecord("early", data.group_text(0, seed=5), {})])
    late = _service(model_dir, a.settings.db_url)  # replays the store, then follows the log
    try:
        assert late.engine.has_item("early") and late.catch_up() == 0
        b.upsert_items([ItemRecord("later", data.group_text(0, seed=6), {})])
        assert late.catch_up() == 1 and late.engine.has_item("later")
    finally:
        late.store.close()


def test_follow_applies_writes_within_its_interval(
    pair: tuple[Service, Service], data: Synthetic
) -> None:
    a, b = pair
    stop = threading.Event()
    follower = threading.Thread(target=b.follow, args=(stop, 0.02), daemon=True)
    follower.start()
    try:
        t0 = time.perf_counter()
        a.upsert_items([ItemRecord("polled", data.group_text(0, seed=8), {})])
        while not b.engine.has_item("polled"):
            assert time.perf_counter() - t0 < 10, "the follower never applied the write"
            time.sleep(0.005)
    finally:
        stop.set()
        follower.join(10)


def test_events_are_applied_with_the_entries_that_logged_them(
    pair: tuple[Service, Service], data: Synthetic
) -> None:
    """A catch-up that stops part-way through the log applies only the events its entries
    logged: a later event may name an item the process does not hold yet."""
    a, b = pair
    known = str(data.items_of(0, cold=False)[0])
    b.add_events([EventRecord("late", known, "click")])
    b.upsert_items([ItemRecord("y", data.group_text(0, seed=12), {})])
    b.add_events([EventRecord("late", "y", "click")])
    assert a.catch_up(limit=1) == 1  # the first events entry only
    assert a.engine.user_info("late")[3] == 1
    assert a.catch_up() == 2
    assert a.engine.user_info("late")[3] == b.engine.user_info("late")[3] == 2
    assert a.engine.recommend_user("late") == b.engine.recommend_user("late")


def test_a_reload_through_one_is_followed_by_the_other(
    pair: tuple[Service, Service], model_dir: Path, tmp_path: Path
) -> None:
    a, b = pair
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    a.reload(other)
    assert a.model_dir == other and b.model_dir == model_dir
    before = b.engine
    b.catch_up()
    assert b.model_dir == other and b.engine is not before
    # The reloading process's own entry does not make it load the folder a second time.
    mine = a.engine
    a.catch_up()
    assert a.engine is mine
    # A worker started later (as `--workers` starts a replacement) serves the reloaded folder.
    late = _service(model_dir, a.settings.db_url, reloads_since=0)
    try:
        assert late.model_dir == other
    finally:
        late.store.close()
    # A SIGHUP reaches every process itself, so its reload is not logged for the others.
    a.reload_on_hangup()
    assert b.catch_up() == 0


def test_an_experiment_started_through_one_routes_on_the_other(
    pair: tuple[Service, Service], model_dir: Path, tmp_path: Path
) -> None:
    a, b = pair
    arm_model = tmp_path / "arm"
    shutil.copytree(model_dir, arm_model)
    arms = [
        {"name": "base", "weight": 1.0},
        {"name": "new", "weight": 1.0, "model": str(arm_model)},
    ]
    a.start_experiment(ExperimentRecord("exp-1", arms))
    assert b.experiments.running is None
    b.catch_up()
    assert b.experiments.running is not None and b.experiments.running.experiment_id == "exp-1"
    assert set(b.arm_engines) == {str(arm_model)}
    users = [f"u{i}" for i in range(40)]
    for user in users:  # the same arm on both, and the model arm's own engine
        engine_a, _, tag_a = a.route(user)
        engine_b, _, tag_b = b.route(user)
        assert tag_a == tag_b and (engine_a is a.engine) == (engine_b is b.engine)
        assert (engine_b is b.engine) == (tag_b is not None and tag_b.arm == "base")
    with pytest.raises(ExperimentConflict):  # b knows one is running, even if it has not seen it
        b.start_experiment(ExperimentRecord("exp-2", [{"name": "x", "weight": 1.0}]))
    a.stop_experiment("exp-1")
    b.catch_up()
    assert b.experiments.running is None and not b.arm_engines
    assert b.route("u1")[2] is None


def test_a_client_reads_its_write_anywhere_by_its_seq(
    model_dir: Path, url: str, data: Synthetic
) -> None:
    """X-Warmstart-Seq: a write's response names its log entry, and a read on another process
    that is sent it waits until that process has applied it."""
    seq_header = "X-Warmstart-Seq"
    item = {"item_id": "mine", "text": data.group_text(2, seed=4)}
    profile = {"item_ids": ["mine"], "k": 3}
    # On SQLite the reader polls the log only every 10 minutes: only the header makes it
    # catch up.
    with (
        serving(model_dir, url) as writer,
        serving(model_dir, url, follow_interval=600.0) as reader,
    ):
        r = writer.post("/v1/items", headers=AUTH, json={"items": [item]})
        assert r.status_code == 200
        seq = int(r.headers[seq_header])
        assert seq > 0
        # The writer's own reads reflect it at once, and say so.
        r = writer.post("/v1/recommendations", headers=AUTH, json=profile)
        assert r.status_code == 200 and int(r.headers[seq_header]) >= seq
        if url.startswith("sqlite"):  # PostgreSQL's NOTIFY may have woken the reader already
            r = reader.post("/v1/recommendations", headers=AUTH, json=profile)
            assert r.status_code == 404  # not applied here yet
        r = reader.post("/v1/recommendations", headers={**AUTH, seq_header: str(seq)}, json=profile)
        assert r.status_code == 200 and int(r.headers[seq_header]) >= seq
        # A seq no write was acknowledged with, and one that is not a number: 422 naming it.
        for bad in (str(seq + 1000), "soon"):
            r = reader.get("/v1/users/u1/recommendations", headers={**AUTH, seq_header: bad})
            assert r.status_code == 422 and seq_header.lower() in r.text.lower(), r.text


def test_a_seq_not_applied_in_time_is_503(
    model_dir: Path, tmp_path: Path, data: Synthetic, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warmstart.serve.app import create_app

    url = f"sqlite:///{tmp_path / 'seq.db'}"
    with serving(model_dir, url) as writer:
        r = writer.post("/v1/users", headers=AUTH, json={"users": [{"user_id": "u", "text": "x"}]})
        seq = int(r.headers["X-Warmstart-Seq"])
    settings = ServeSettings(
        model_dir=model_dir,
        db_url=url,
        api_keys=(KEY,),  # type: ignore[arg-type]
        follow_interval=600.0,
        seq_wait=0.2,
    )
    app = create_app(settings)
    stuck = app.state.service
    monkeypatch.setattr(stuck, "catch_up", lambda limit=10_000: 0)  # a store that lags
    server, base = start_server(app, settings)
    try:
        stuck.applied_seq = 0
        r = httpx.get(
            f"{base}/v1/users/u/recommendations",
            headers={**AUTH, "X-Warmstart-Seq": str(seq)},
        )
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "X-Warmstart-Seq" in r.json()["detail"]
    finally:
        server.should_exit = True
        server.thread.join(timeout=10)  # type: ignore[attr-defined]


def test_a_write_wakes_a_postgresql_follower_at_once(url: str) -> None:
    """PostgreSQL: every logged write NOTIFYs at commit, so a follower waiting for a change
    wakes then, not at its next poll; SQLite has no notifications (followers poll)."""
    if not url.startswith("postgresql"):
        pytest.skip("SQLite has no notifications: a follower polls every follow_interval")
    with Store.open(url) as writer, Store.open(url) as follower:
        follower.wait_for_change(0.01)  # connects and LISTENs (then waits up to a second)
        _woken_by_a_write(writer, follower, "noticed")
        # A listener whose connection dies: the next wait notices and backs off, the one
        # after connects again, and writes wake it as before.
        follower._listening.dbapi_connection.close()
        start = time.monotonic()
        follower.wait_for_change(0.01)
        assert time.monotonic() - start >= 0.9 and follower._listening is None
        follower.wait_for_change(0.01)
        _woken_by_a_write(writer, follower, "noticed-again")


def _woken_by_a_write(writer: Store, follower: Store, item_id: str) -> None:
    woke = threading.Event()

    def wait() -> None:
        follower.wait_for_change(0.01)  # on PostgreSQL: until a notification, a second at most
        woke.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.3)
    assert not woke.is_set()  # nothing was written: still waiting, past the poll interval
    start = time.monotonic()
    writer.upsert_items([ItemRecord(item_id, "some text", {})])
    assert woke.wait(10), "the write's notification never arrived"
    assert time.monotonic() - start < 0.5  # the notification, not the one-second timeout
    waiter.join(5)
