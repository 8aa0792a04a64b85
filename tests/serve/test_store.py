"""The service's durable store, on SQLite and (when a server is given) PostgreSQL.

PostgreSQL runs only when WARMSTART_TEST_POSTGRES_URL points at a real server, e.g.
``export WARMSTART_TEST_POSTGRES_URL=$(.ci/postgres.sh)``; each test gets its own schema.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from warmstart.errors import WarmstartError
from warmstart.serve.store import (
    SCHEMA_VERSION,
    EventRecord,
    ItemRecord,
    Store,
    StoreError,
    UserRecord,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url)
    try:
        yield s
    finally:
        s.close()


def ev(user: str, item: str, event_id: str | None = None) -> EventRecord:
    return EventRecord(user_id=user, item_id=item, type="view", event_id=event_id)


# --------------------------------------------------------------------------- round trips


def test_items_users_events_round_trip(store: Store) -> None:
    attrs = {"genres": ["Drama", "Comédie"], "year": 1999, "nested": {"a": None, "b": 1.5}}
    store.upsert_items(
        [
            ItemRecord("i2", "Second item", {}),
            ItemRecord("i1", "Première — 初め", attrs),
            ItemRecord("i3", None, {"x": True}),
        ]
    )
    store.upsert_users([UserRecord("u1", "likes films", {"age": 30}), UserRecord("u0", None, {})])
    flags = store.add_events(
        [
            EventRecord("u1", "i1", "rating", value=4.5, timestamp=1_700_000_000.25, event_id="e1"),
            EventRecord("u1", "i2", "click"),
        ]
    )
    assert flags == [True, True]

    one = store.get_item("i1")
    assert one is not None
    assert (one.item_id, one.text, one.attributes, one.deleted) == (
        "i1",
        "Première — 初め",
        attrs,
        False,
    )
    assert abs(one.updated_at - time.time()) < 60
    three = store.get_item("i3")
    assert three == ItemRecord("i3", None, {"x": True}, False, three.updated_at if three else 0.0)
    assert store.get_item("nope") is None
    assert [it.item_id for it in store.items()] == ["i1", "i2", "i3"]

    user = store.get_user("u1")
    assert user is not None and (user.text, user.attributes) == ("likes films", {"age": 30})
    zero = store.get_user("u0")
    assert zero == UserRecord("u0", None, {}, zero.updated_at if zero else 0.0)
    assert store.get_user("nope") is None
    assert [u.user_id for u in store.users()] == ["u0", "u1"]

    got = store.events()
    assert [(e.user_id, e.item_id, e.type, e.value, e.timestamp, e.event_id) for e in got] == [
        ("u1", "i1", "rating", 4.5, 1_700_000_000.25, "e1"),
        ("u1", "i2", "click", None, None, None),
    ]
    assert 0 < got[0].seq < got[1].seq


def test_empty_batches_are_no_ops(store: Store) -> None:
    store.upsert_items([])
    store.upsert_users([])
    assert store.add_events([]) == []
    assert store.counts() == {"items": 0, "deleted_items": 0, "users": 0, "events": 0}
    assert store.items() == [] and store.users() == [] and store.events() == []


def test_ids_are_listed_in_code_point_order(store: Store) -> None:
    ids = ["b", "a", "B", "é", "a10", "a9", "Z"]
    store.upsert_items([ItemRecord(i, None, {}) for i in ids])
    store.upsert_users([UserRecord(i, None, {}) for i in ids])
    assert [it.item_id for it in store.items()] == sorted(ids)
    assert [u.user_id for u in store.users()] == sorted(ids)


# ------------------------------------------------------------------------- upsert / delete


def test_upsert_replaces_and_undeletes(store: Store) -> None:
    store.upsert_items([ItemRecord("i1", "old", {"v": 1}), ItemRecord("i2", "keep", {})])
    first = store.get_item("i1")
    assert first is not None
    assert store.delete_item("i1") is True
    deleted = store.get_item("i1")
    assert deleted is not None and deleted.deleted and deleted.text == "old"

    store.upsert_items([ItemRecord("i1", "new", {"v": 2}, deleted=True)])  # upsert un-deletes
    again = store.get_item("i1")
    assert again is not None
    assert (again.text, again.attributes, again.deleted) == ("new", {"v": 2}, False)
    assert again.updated_at >= first.updated_at
    kept = store.get_item("i2")
    assert kept is not None and kept.text == "keep"

    # Repeated ids in one batch: the last one wins, as if applied in order.
    store.upsert_items([ItemRecord("i3", "a", {}), ItemRecord("i3", "b", {"last": True})])
    i3 = store.get_item("i3")
    assert i3 is not None and (i3.text, i3.attributes) == ("b", {"last": True})

    store.upsert_users([UserRecord("u1", "old", {"a": 1})])
    store.upsert_users([UserRecord("u1", "new", {"b": 2}), UserRecord("u2", None, {})])
    u1 = store.get_user("u1")
    assert u1 is not None and (u1.text, u1.attributes) == ("new", {"b": 2})
    assert store.counts()["users"] == 2


def test_delete(store: Store) -> None:
    store.upsert_items([ItemRecord("i1", "a", {}), ItemRecord("i2", "b", {})])
    assert store.delete_item("i1") is True
    assert store.delete_item("i1") is False  # already deleted
    assert [it.item_id for it in store.items()] == ["i1", "i2"]
    assert [it.item_id for it in store.items(include_deleted=False)] == ["i2"]
    assert [it.deleted for it in store.items()] == [True, False]
    assert store.counts() == {"items": 1, "deleted_items": 1, "users": 0, "events": 0}


def test_deleting_an_item_the_store_never_held_leaves_a_tombstone(store: Store) -> None:
    """A trained item (in the model, never posted) must stay deleted across a restart."""
    assert store.delete_item("trained-7") is True
    assert store.delete_item("trained-7") is False
    tomb = store.get_item("trained-7")
    assert tomb is not None and tomb.deleted and tomb.text is None
    store.upsert_items([ItemRecord("trained-7", "back again", {})])
    back = store.get_item("trained-7")
    assert back is not None and not back.deleted and back.text == "back again"


# ------------------------------------------------------------------------------ events


def test_event_ids_are_idempotent(store: Store) -> None:
    first = store.add_events([ev("u", "i", "a"), ev("u", "i", "a"), ev("u", "i"), ev("u", "i")])
    assert first == [True, False, True, True]  # repeat in the batch skipped; no id always new
    second = store.add_events([ev("u", "j", "a"), ev("u", "j", "b"), ev("u", "j", "b")])
    assert second == [False, True, False]  # stored earlier; new; repeat of the new one
    got = store.events()
    assert [(e.item_id, e.event_id) for e in got] == [
        ("i", "a"),
        ("i", None),
        ("i", None),
        ("j", "b"),
    ]
    assert store.counts()["events"] == 4


def test_events_in_seq_order_filtered_by_user_and_since(store: Store) -> None:
    batch = [ev(f"u{n % 3}", f"i{n}", f"e{n}") for n in range(10)]
    store.add_events(batch[:4])
    store.add_events(batch[4:])
    got = store.events()
    assert [e.event_id for e in got] == [f"e{n}" for n in range(10)]  # input order is seq order
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10

    u1 = store.events(user_id="u1")
    assert [e.event_id for e in u1] == ["e1", "e4", "e7"]
    assert store.events(user_id="nobody") == []

    cut = got[5].seq
    assert [e.event_id for e in store.events(since_seq=cut)] == ["e6", "e7", "e8", "e9"]
    assert [e.event_id for e in store.events(user_id="u1", since_seq=cut)] == ["e7"]
    assert store.events(since_seq=got[-1].seq) == []


def test_counts(store: Store) -> None:
    store.upsert_items([ItemRecord(f"i{n}", None, {}) for n in range(5)])
    store.delete_item("i0")
    store.delete_item("i1")
    store.upsert_users([UserRecord("u1", None, {}), UserRecord("u2", None, {})])
    store.add_events([ev("u1", "i2", "x"), ev("u1", "i2", "x"), ev("u2", "i3")])
    assert store.counts() == {"items": 3, "deleted_items": 2, "users": 2, "events": 2}


# -------------------------------------------------------------------------- durability


def test_reopen_sees_everything(url: str) -> None:
    with Store.open(url) as s:
        s.upsert_items([ItemRecord("i1", "one", {"k": [1, 2]}), ItemRecord("i2", "two", {})])
        s.delete_item("i2")
        s.upsert_users([UserRecord("u1", "me", {})])
        s.add_events([ev("u1", "i1", "e1"), ev("u1", "i2")])
        before = (s.items(), s.users(), s.events(), s.counts())
    with Store.open(url) as s:  # reopening must not recreate or clear anything
        assert (s.items(), s.users(), s.events(), s.counts()) == before
        assert s.add_events([ev("u1", "i1", "e1")]) == [False]  # ids remembered across opens
        s.add_events([ev("u1", "i1")])
        assert s.events()[-1].seq > before[2][-1].seq


def test_open_races_on_a_fresh_database(url: str) -> None:
    """Several workers starting at once on an empty database all create/check the schema."""
    errors: list[BaseException] = []
    stores: list[Store] = []

    def opener() -> None:
        try:
            stores.append(Store.open(url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    assert len(stores) == 4


def test_schema_version_mismatch_is_refused(url: str) -> None:
    with Store.open(url) as s, s._engine.begin() as conn:
        conn.execute(text("UPDATE meta SET value = '999' WHERE key = 'schema_version'"))
    with pytest.raises(StoreError, match=rf"schema version 999.*version {SCHEMA_VERSION}"):
        Store.open(url)


def test_closed_store_refuses_work(url: str) -> None:
    s = Store.open(url)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.counts()


def test_concurrent_writers_all_land(url: str) -> None:
    """4 threads x 50 single-event commits, over two Store objects on one database (as two
    service processes would be): none is lost and none fails with 'database is locked'."""
    n_threads, per_thread = 4, 50
    stores = [Store.open(url), Store.open(url)]
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def writer(t: int) -> None:
        s = stores[t % 2]
        try:
            start.wait()
            for n in range(per_thread):
                assert s.add_events([ev(f"u{t}", f"i{n}", f"t{t}-{n}")]) == [True]
                if n % 10 == 0:
                    s.upsert_items([ItemRecord(f"i{n}", f"by {t}", {"t": t})])
                    s.upsert_users([UserRecord(f"u{t}", None, {"n": n})])
                    s.counts()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [], errors[:1]
        got = stores[0].events()
        assert len(got) == n_threads * per_thread
        assert {e.event_id for e in got} == {
            f"t{t}-{n}" for t in range(n_threads) for n in range(per_thread)
        }
        assert len({e.seq for e in got}) == len(got)
        for t in range(n_threads):  # each thread's events are in its own commit order
            mine = [e.event_id for e in stores[1].events(user_id=f"u{t}")]
            assert mine == [f"t{t}-{n}" for n in range(per_thread)]
        assert stores[1].counts() == {
            "items": 5,
            "deleted_items": 0,
            "users": n_threads,
            "events": n_threads * per_thread,
        }
    finally:
        for s in stores:
            s.close()


_WRITER = """
import sys
from warmstart.serve.store import EventRecord, Store

store = Store.open(sys.argv[1])
n = 0
while True:
    store.add_events([EventRecord("u%d" % (n % 3), "i%d" % (n % 7), "view", event_id="e%d" % n)])
    print("e%d" % n, flush=True)  # acknowledged: add_events has returned
    n += 1
"""


def test_acknowledged_events_survive_sigkill(tmp_path: Path) -> None:
    """Kill a writer process mid-stream: every event it acknowledged is in the file."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acknowledged: list[str] = []
    try:
        assert proc.stdout is not None
        while len(acknowledged) < 200:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert len(acknowledged) == 200, f"writer stopped early: {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL

    with Store.open(url) as s:
        stored = {e.event_id for e in s.events()}
    missing = [e for e in acknowledged if e not in stored]
    assert missing == []
    assert len(stored) >= len(acknowledged)  # maybe one more, committed but not yet printed


def test_sqlite_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store.open(f"sqlite:///{path}") as s:
        assert s.dialect == "sqlite"
        s.upsert_items([ItemRecord("i1", None, {})])
        with s._engine.connect() as conn:  # the settings of the store's own connections
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    raw = sqlite3.connect(path)  # WAL is recorded in the file itself
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


# ------------------------------------------------------------------------ opening errors


def test_sqlite_missing_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StoreError, match=r"folder .*no/such.* does not exist") as info:
        Store.open(f"sqlite:///{missing / 'store.db'}")
    assert isinstance(info.value, WarmstartError)
    assert not missing.exists()  # not created behind the user's back


def test_in_memory_sqlite_is_refused_unless_allowed() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(StoreError, match=r"in-memory.*lost"):
            Store.open(url)
    with Store.open("sqlite://", allow_memory=True) as s:
        s.upsert_items([ItemRecord("i1", "x", {})])
        assert s.add_events([ev("u", "i1", "a"), ev("u", "i1", "a")]) == [True, False]
        assert s.counts() == {"items": 1, "deleted_items": 0, "users": 0, "events": 1}


@pytest.mark.parametrize(
    ("url", "pattern"),
    [
        ("not a url", "not a database URL"),
        ("mysql://bob:hunter2@db.example/app", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://bob:hunter2@127.0.0.1/app", "unsupported PostgreSQL driver"),
        ("bob:hunter2@127.0.0.1/app", "not a database URL"),
    ],
)
def test_bad_urls(url: str, pattern: str) -> None:
    with pytest.raises(StoreError, match=pattern) as info:
        Store.open(url)
    assert "hunter2" not in str(info.value)


def test_unreachable_postgres_masks_password() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(StoreError) as info:
        Store.open("postgresql://bob:hunter2@127.0.0.1:1/app")
    message = str(info.value)
    assert "hunter2" not in message
    assert "postgresql://bob:***@127.0.0.1:1/app" in message
    assert "127.0.0.1" in message and "refused" in message.lower()

    with pytest.raises(StoreError) as info:
        Store.open("postgresql://bob@127.0.0.1:1/app?password=hunter2")
    assert "hunter2" not in str(info.value)


def test_url_and_dialect(url: str) -> None:
    with Store.open(url) as s:
        assert s.dialect == url.split(":", 1)[0]
        assert s.url.split(":", 1)[0] == s.dialect
        password = make_url(url).password
        if password:
            assert password not in s.url and "***" in s.url
        assert s.url in repr(s)


# --------------------------------------------------------------------------- the change log


def test_every_write_is_logged_in_commit_order(store: Store) -> None:
    assert store.changes() == [] and store.last_change() == 0 and store.last_event_seq() == 0
    store.upsert_items([ItemRecord("a", "x", {}), ItemRecord("b", "y", {})])
    store.upsert_users([UserRecord("u", "hi", {})])
    assert store.add_events([ev("u", "a", "e1"), ev("u", "b")]) == [True, True]
    assert store.add_events([ev("u", "a", "e1")]) == [False]  # nothing new: nothing logged
    assert store.delete_item("a") and not store.delete_item("a")
    log = store.changes()
    assert [(c.kind, c.key) for c in log] == [
        ("item", "a"),
        ("item", "b"),
        ("user", "u"),
        ("events", "2"),
        ("item", "a"),
    ]
    assert [c.seq for c in log] == sorted(c.seq for c in log) and len({c.seq for c in log}) == 5
    assert store.last_change() == log[-1].seq and store.last_event_seq() == 2
    assert [e.event_id for e in store.events(since_seq=0, through_seq=1)] == ["e1"]
    assert [c.key for c in store.changes(log[2].seq)] == ["2", "a"]
    assert [c.key for c in store.changes(0, limit=2)] == ["a", "b"]
    assert [(r.item_id, r.deleted) for r in store.items_by_id(["b", "a", "zz"])] == [
        ("a", True),
        ("b", False),
    ]
    assert [u.text for u in store.users_by_id(["u", "nobody"])] == ["hi"]


def test_concurrent_writers_log_every_write_once(url: str) -> None:
    """Two Store objects (two processes) writing at once: the log holds one entry per write,
    with distinct seqs, and a reader that has seen seq N has seen every smaller one."""
    stores = [Store.open(url), Store.open(url)]
    seen: list[list[int]] = []
    done = threading.Event()

    def tail() -> None:
        last = 0
        while not done.is_set():
            got = [c.seq for c in stores[0].changes(last)]
            if got:
                seen.append(got)
                last = got[-1]

    def writer(t: int) -> None:
        for n in range(30):
            stores[t].upsert_items([ItemRecord(f"i{t}-{n}", "text", {})])

    reader = threading.Thread(target=tail)
    reader.start()
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    try:
        log = stores[1].changes()
        assert sorted(c.key for c in log) == sorted(
            f"i{t}-{n}" for t in range(2) for n in range(30)
        )
        tailed = [s for batch in seen for s in batch]
        # What the tail read is a prefix of the log: no entry appeared behind one already read.
        assert tailed == [c.seq for c in log][: len(tailed)]
    finally:
        for s in stores:
            s.close()


def test_a_version_1_database_is_upgraded(url: str) -> None:
    with Store.open(url) as s:
        s.upsert_items([ItemRecord("a", "x", {})])
        with s._engine.begin() as conn:
            conn.execute(text("DROP TABLE changes"))
            conn.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    with Store.open(url) as s:
        assert [i.item_id for i in s.items()] == ["a"]
        assert s.changes() == []
        s.upsert_items([ItemRecord("b", "y", {})])
        assert [c.key for c in s.changes()] == ["b"]
        with s._engine.connect() as conn:
            version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'"))
            assert version.scalar_one() == str(SCHEMA_VERSION)


def test_an_items_vector_is_stored_with_it(url: str) -> None:
    vector = np.arange(4, dtype="<f4").tobytes()
    with Store.open(url) as s:
        s.upsert_items([ItemRecord("a", "x", {}, vector=vector, encoder="enc")])
        s.upsert_items([ItemRecord("b", "y", {})])
        a, b = s.items_by_id(["a", "b"])
        assert (a.vector, a.encoder) == (vector, "enc")
        assert (b.vector, b.encoder) == (None, None)
        assert a == ItemRecord("a", "x", {}, updated_at=a.updated_at)  # derived, not compared
        s.delete_item("a")
        gone = s.get_item("a")
        assert gone is not None and gone.deleted and gone.vector == vector


def test_a_version_2_database_gains_the_vector_columns(url: str) -> None:
    with Store.open(url) as s:
        s.upsert_items([ItemRecord("a", "x", {})])
        with s._engine.begin() as conn:
            conn.execute(text("ALTER TABLE items DROP COLUMN vector"))
            conn.execute(text("ALTER TABLE items DROP COLUMN encoder"))
            conn.execute(text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    with Store.open(url) as s:
        (a,) = s.items()
        assert a.item_id == "a" and a.vector is None
        s.upsert_items([ItemRecord("b", "y", {}, vector=b"\0" * 8, encoder="e")])
        assert s.get_item("b") == ItemRecord("b", "y", {}, updated_at=s.get_item("b").updated_at)
        assert s.get_item("b").vector == b"\0" * 8  # type: ignore[union-attr]
