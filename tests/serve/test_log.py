"""Several serving processes over one store: each applies the others' writes from its log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.synthetic import Synthetic
from warmstart.models import Recommender
from warmstart.serve.service import ServeSettings, Service, servable
from warmstart.serve.store import EventRecord, ItemRecord, Store, UserRecord


def _service(model_dir: Path, url: str) -> Service:
    settings = ServeSettings(model_dir=model_dir, db_url=url, api_keys=("k" * 12,))
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
    # The writer's own entries come back through the log and change nothing.
    before = a.engine.snapshot
    assert a.catch_up() == 4
    assert a.engine.snapshot is before


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
