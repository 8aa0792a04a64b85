"""The service's durable store: items, users and events in SQLite (embedded) or PostgreSQL.

Every write method commits before it returns, so anything the service has acknowledged survives a
crash or a power cut (SQLite runs in WAL mode with ``synchronous=FULL``). On startup the service
replays `items()`, `users()` and `events()` to rebuild its in-memory model.

Every write also appends to the `changes` table, in the same transaction: which item, user or
events it touched, under a sequence number in commit order (writers are serialized: SQLite's
write lock, a PostgreSQL advisory lock). That is the ordered log every serving process follows
(`changes(since_seq)`): the rows' `updated_at` is not safe to tail, as two transactions can
commit in the other order than their clocks.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    false,
    func,
    inspect,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from warmstart.errors import WarmstartError

__all__ = ["Change", "EventRecord", "ItemRecord", "Store", "StoreError", "UserRecord"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""Bumped whenever the tables change; a store refuses to open a database from another version
(older ones are upgraded: version 2 added the `changes` table, version 3 the items' `vector` and
`encoder` columns)."""

_SQLITE_BUSY_TIMEOUT_MS = 30_000  # writers queue up behind each other rather than fail
_PG_CONNECT_TIMEOUT_S = 10  # an unreachable server fails startup in seconds, not minutes
_WRITE = "warmstart_write"  # execution option: this transaction will write
# Arbitrary constants naming PostgreSQL advisory locks (one per purpose).
_PG_LOCK_SCHEMA = 0x5741524D_0001
_PG_LOCK_WRITES = 0x5741524D_0002  # every logged write: change seq order is commit order
# Every logged write notifies this channel at commit, with its newest seq (NOTIFY has no replay
# and an 8,000-byte payload: a listener only learns that it should read the log again).
_PG_CHANNEL = "warmstart_changes"
_PG_LISTEN_WAIT = 1.0  # seconds a listener waits for a notification before reading the log anyway
CHANGE_ITEM, CHANGE_USER, CHANGE_EVENTS = "item", "user", "events"
# What is served: a model folder reloaded (key: the folder), an experiment started or stopped.
CHANGE_MODEL, CHANGE_EXPERIMENT = "model", "experiment"


class StoreError(WarmstartError, RuntimeError):
    """The database cannot be opened or used: bad URL, missing folder, unreachable server."""


@dataclass(frozen=True)
class ItemRecord:
    """An item as the service knows it; `deleted` items stay stored so ids are never reused.

    `vector` is the item's text as `encoder` encoded it (float32 bytes), stored by the process
    that took the write so every other process and replica uses the same bits instead of
    encoding the text again. It is derived data: records compare without it.
    """

    item_id: str
    text: str | None
    attributes: dict[str, Any]
    deleted: bool = False
    updated_at: float = 0.0
    vector: bytes | None = field(default=None, compare=False, repr=False)
    encoder: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class UserRecord:
    """A user's profile text and attributes (their interactions are events)."""

    user_id: str
    text: str | None
    attributes: dict[str, Any]
    updated_at: float = 0.0


@dataclass(frozen=True)
class EventRecord:
    """One interaction. `seq` is assigned by the store and orders events by insertion."""

    user_id: str
    item_id: str
    type: str
    value: float | None = None
    timestamp: float | None = None
    event_id: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class Change:
    """One entry of the ordered log: an item or user (by id) whose stored row changed, events
    stored (`key` is the newest event's seq), a model folder reloaded (`key` is the folder) or
    an experiment started or stopped (`key` is its id)."""

    seq: int
    kind: str  # CHANGE_ITEM | CHANGE_USER | CHANGE_EVENTS | CHANGE_MODEL | CHANGE_EXPERIMENT
    key: str


@dataclass(frozen=True)
class ExperimentRecord:
    experiment_id: str
    arms: list[dict[str, Any]]  # [{"name", "weight", ...variant}]
    status: str = "running"  # "running" | "stopped"
    start_seq: int = 0  # set by the store: the newest event when it was created
    created_at: float = 0.0


metadata = MetaData()
_Json = JSON().with_variant(postgresql.JSONB(), "postgresql")

meta_table = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
items_table = Table(
    "items",
    metadata,
    Column("item_id", Text, primary_key=True),
    Column("text", Text, nullable=True),
    Column("attributes", _Json, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("updated_at", Double, nullable=False),
    Column("vector", LargeBinary, nullable=True),  # float32 bytes, see ItemRecord
    Column("encoder", Text, nullable=True),
)
users_table = Table(
    "users",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("text", Text, nullable=True),
    Column("attributes", _Json, nullable=False),
    Column("updated_at", Double, nullable=False),
)
events_table = Table(
    "events",
    metadata,
    # sqlite_autoincrement: a seq is never reused, even after the newest rows are deleted.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=True, unique=True),  # NULLs never collide
    Column("user_id", Text, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("value", Double, nullable=True),
    Column("timestamp", Double, nullable=True),
    Column("created_at", Double, nullable=False),
    # (user_id, seq) serves both "this user's events" and "in seq order".
    Index("ix_events_user_id_seq", "user_id", "seq"),
    sqlite_autoincrement=True,
)

changes_table = Table(
    "changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("created_at", Double, nullable=False),
)
experiments_table = Table(
    "experiments",
    metadata,
    Column("experiment_id", Text, primary_key=True),
    Column("arms", _Json, nullable=False),  # [{"name", "weight", ...variant}]
    Column("status", Text, nullable=False),  # "running" | "stopped"
    Column("start_seq", Integer, nullable=False),  # events after this one count
    Column("created_at", Double, nullable=False),
)
exposures_table = Table(
    "experiment_exposures",
    metadata,
    Column("experiment_id", Text, primary_key=True),
    Column("arm", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("lists", Integer, nullable=False),  # recommendation lists served
    Column("shown", Integer, nullable=False),  # items shown in them
)

_PASSWORD_IN_URL = re.compile(r"((?:^|://)[^/@:\s]*:)[^/@\s]*@")


def _mask_raw(url: str) -> str:
    """Mask a password in a URL string that may not even parse."""
    url = _PASSWORD_IN_URL.sub(r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def _mask(url: URL) -> str:
    """Render `url` with its password (also one given as a query parameter) masked."""
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)


class Store:
    """Items, users and events in one database; safe to share between threads.

    Open it with `Store.open(url)`. Each method runs in its own transaction and, for writes,
    commits before returning.
    """

    def __init__(self, engine: Engine, display_url: str, secrets: Sequence[str]) -> None:
        """Use `Store.open`; this only wires an already configured engine."""
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        self._display_url = display_url
        self._secrets = [s for s in secrets if len(s) >= 4]  # shorter would mangle messages
        self._closed = False
        self._local = threading.local()
        self._listening: Any = None  # the LISTEN connection (PostgreSQL, `wait_for_change`)
        # An in-memory SQLite database lives in one shared connection: serialize its users.
        self._serial: threading.RLock | None = (
            threading.RLock() if isinstance(engine.pool, StaticPool) else None
        )

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, url: str, *, allow_memory: bool = False) -> Store:
        """Connect to `url`, create missing tables and check the schema version.

        ``sqlite:///path.db`` (the folder must exist) or ``postgresql://user:pw@host:port/db``
        (driven by psycopg 3). An in-memory SQLite database is not durable, so it is refused
        unless `allow_memory` (tests only).
        """
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:
            raise StoreError(
                f"not a database URL: {_mask_raw(url)!r} (expected sqlite:///path/to/file.db "
                "or postgresql://user:password@host:port/database)"
            ) from exc
        display = _mask(parsed)
        secrets = [parsed.password or "", str(parsed.query.get("password") or "")]
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            engine = _sqlite_engine(parsed, display, allow_memory=allow_memory)
        elif backend in ("postgresql", "postgres"):
            engine = _postgres_engine(parsed, display)
        else:
            raise StoreError(
                f"unsupported database {backend!r} in {display!r}: use sqlite:///path/to/file.db "
                "or postgresql://user:password@host:port/database"
            )
        store = cls(engine, display, [str(s) for s in secrets])
        try:
            store._create_schema()
        except BaseException:
            engine.dispose()
            raise
        return store

    def _create_schema(self) -> None:
        """Create missing tables and record (or check) the schema version; safe to race."""
        with self._write("open the database") as conn:
            if self.dialect == "postgresql":
                # Two processes opening a fresh database at once would both try CREATE TABLE.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_SCHEMA})
            metadata.create_all(conn)
            conn.execute(
                _insert(self.dialect, meta_table)
                .values(key="schema_version", value=str(SCHEMA_VERSION))
                .on_conflict_do_nothing(index_elements=[meta_table.c.key])
            )
            found = conn.execute(
                select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).scalar_one()
            if found in ("1", "2"):  # version 2 added the changes table, created above
                have = {c["name"] for c in inspect(conn).get_columns("items")}
                blob = "BYTEA" if self.dialect == "postgresql" else "BLOB"
                for name, kind in (("vector", blob), ("encoder", "TEXT")):
                    if name not in have:
                        conn.execute(text(f"ALTER TABLE items ADD COLUMN {name} {kind}"))
                conn.execute(
                    update(meta_table)
                    .where(meta_table.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )
                found = str(SCHEMA_VERSION)
            if self.dialect == "sqlite":
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                if mode != "wal" and self._serial is None:
                    log.warning("SQLite at %s is in %s mode, not WAL", self._display_url, mode)
        if found != str(SCHEMA_VERSION):
            raise StoreError(
                f"the database at {self._display_url} has schema version {found}; this warmstart "
                f"uses version {SCHEMA_VERSION}: use a new database or a matching warmstart"
            )

    # -------------------------------------------------------------- properties

    @property
    def url(self) -> str:
        """The database URL with its password masked (safe to log and show)."""
        return self._display_url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    # ------------------------------------------------------------------- items

    def upsert_items(self, items: Sequence[ItemRecord]) -> None:
        """Insert or replace items in one transaction; replacing a deleted item un-deletes it."""
        now = time.time()
        rows = {
            it.item_id: {
                "item_id": it.item_id,
                "text": it.text,
                "attributes": dict(it.attributes),
                "deleted": False,
                "updated_at": now,
                "vector": it.vector,
                "encoder": it.encoder if it.vector is not None else None,
            }
            for it in items  # the last of repeated ids wins, as if applied in order
        }
        if not rows:
            return
        with self._logged_write("store items") as conn:
            conn.execute(_upsert(self.dialect, items_table, "item_id"), list(rows.values()))
            self._log(conn, CHANGE_ITEM, list(rows), now)

    def delete_item(self, item_id: str) -> bool:
        """Mark an item deleted (kept so events about it stay meaningful); False if no change.

        An item the store never held (one from the model's training data) gets a tombstone row,
        so that a restart, which replays the store into the model, deletes it again.
        """
        now = time.time()
        stmt = (
            _insert(self.dialect, items_table)
            .values(item_id=item_id, text=None, attributes={}, deleted=True, updated_at=now)
            .on_conflict_do_update(
                index_elements=[items_table.c.item_id],
                set_={"deleted": True, "updated_at": now},
                where=items_table.c.deleted == false(),
            )
            .returning(items_table.c.item_id)  # a row only where it was inserted or updated
        )
        with self._logged_write("delete an item") as conn:
            changed = conn.execute(stmt).first() is not None
            if changed:
                self._log(conn, CHANGE_ITEM, [item_id], now)
            return changed

    def get_item(self, item_id: str) -> ItemRecord | None:
        """One item (deleted or not), or None if it was never stored."""
        stmt = select(items_table).where(items_table.c.item_id == item_id)
        with self._read("read an item") as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _item(row._mapping)

    def items(self, include_deleted: bool = True) -> list[ItemRecord]:
        """All items in item_id order (code-point order on every database, for replay)."""
        stmt = select(items_table)
        if not include_deleted:
            stmt = stmt.where(items_table.c.deleted == false())
        with self._read("read items") as conn:
            found = [_item(row._mapping) for row in conn.execute(stmt)]
        # Sorted here: PostgreSQL's ORDER BY follows the server's locale collation.
        found.sort(key=lambda it: it.item_id)
        return found

    # ------------------------------------------------------------------- users

    def upsert_users(self, users: Sequence[UserRecord]) -> None:
        """Insert or replace users in one transaction."""
        now = time.time()
        rows = {
            u.user_id: {
                "user_id": u.user_id,
                "text": u.text,
                "attributes": dict(u.attributes),
                "updated_at": now,
            }
            for u in users
        }
        if not rows:
            return
        with self._logged_write("store users") as conn:
            conn.execute(_upsert(self.dialect, users_table, "user_id"), list(rows.values()))
            self._log(conn, CHANGE_USER, list(rows), now)

    def get_user(self, user_id: str) -> UserRecord | None:
        """One user, or None if never stored."""
        stmt = select(users_table).where(users_table.c.user_id == user_id)
        with self._read("read a user") as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _user(row._mapping)

    def users(self) -> list[UserRecord]:
        """All users in user_id order (code-point order)."""
        with self._read("read users") as conn:
            found = [_user(row._mapping) for row in conn.execute(select(users_table))]
        found.sort(key=lambda u: u.user_id)
        return found

    # ------------------------------------------------------------------ events

    def add_events(self, events: Sequence[EventRecord]) -> list[bool]:
        """Store events in one transaction; for each, whether it was new.

        An event whose `event_id` is already stored, or appeared earlier in this batch, is skipped
        (False), so a client may safely retry a batch. Events without an id are always stored.
        The unique index decides, not a prior read, so concurrent writers cannot both insert one id.
        """
        if not events:
            return []
        now = time.time()
        table = events_table
        with self._logged_write("store events") as conn:
            new: list[bool] = []
            for ev in events:  # one statement each: keeps input order in seq and says which landed
                stmt = _insert(self.dialect, table).values(
                    event_id=ev.event_id,
                    user_id=ev.user_id,
                    item_id=ev.item_id,
                    type=ev.type,
                    value=ev.value,
                    timestamp=ev.timestamp,
                    created_at=now,
                )
                if ev.event_id is not None:
                    stmt = stmt.on_conflict_do_nothing(index_elements=[table.c.event_id])
                if self.dialect == "postgresql":
                    # psycopg reports no rowcount for INSERT ... RETURNING; a row back means new.
                    landed = conn.execute(stmt.returning(table.c.seq)).first() is not None
                else:
                    landed = conn.execute(stmt).rowcount == 1  # sqlite3_changes(): 0 if skipped
                new.append(landed)
            if any(new):
                newest = conn.execute(select(func.max(table.c.seq))).scalar_one()
                self._log(conn, CHANGE_EVENTS, [str(newest)], now)
        return new

    # ------------------------------------------------------------------ the log

    def changes(self, since_seq: int = 0, limit: int | None = None) -> list[Change]:
        """Log entries with seq > `since_seq`, in seq (commit) order."""
        stmt = (
            select(changes_table.c.seq, changes_table.c.kind, changes_table.c.key)
            .where(changes_table.c.seq > since_seq)
            .order_by(changes_table.c.seq)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read("read the change log") as conn:
            return [Change(int(r.seq), r.kind, r.key) for r in conn.execute(stmt)]

    def last_change(self) -> int:
        """The newest log entry's seq (0 when the log is empty)."""
        with self._read("read the change log") as conn:
            found = conn.execute(select(func.max(changes_table.c.seq))).scalar_one()
        return int(found or 0)

    def last_event_seq(self) -> int:
        """The newest event's seq (0 when there are none)."""
        with self._read("read events") as conn:
            found = conn.execute(select(func.max(events_table.c.seq))).scalar_one()
        return int(found or 0)

    def items_by_id(self, item_ids: Sequence[str]) -> list[ItemRecord]:
        """The stored rows of these items (deleted ones included), in item_id order."""
        return self._rows_by_id(items_table, items_table.c.item_id, item_ids, _item, "items")

    def users_by_id(self, user_ids: Sequence[str]) -> list[UserRecord]:
        """The stored rows of these users, in user_id order."""
        return self._rows_by_id(users_table, users_table.c.user_id, user_ids, _user, "users")

    def _rows_by_id(
        self, table: Table, column: Any, ids: Sequence[str], row: Any, what: str
    ) -> Any:
        found = []
        unique = sorted(set(ids))
        with self._read(f"read {what}") as conn:
            for start in range(0, len(unique), 500):  # bounded IN lists
                part = unique[start : start + 500]
                found += [
                    row(r._mapping) for r in conn.execute(select(table).where(column.in_(part)))
                ]
        return sorted(found, key=lambda r: getattr(r, column.key))

    def events(
        self, user_id: str | None = None, since_seq: int = 0, through_seq: int | None = None
    ) -> list[EventRecord]:
        """Events with `since_seq` < seq <= `through_seq` (all of them, or one user's), in seq
        order."""
        stmt = select(events_table).where(events_table.c.seq > since_seq)
        if through_seq is not None:
            stmt = stmt.where(events_table.c.seq <= through_seq)
        if user_id is not None:
            stmt = stmt.where(events_table.c.user_id == user_id)
        stmt = stmt.order_by(events_table.c.seq)
        with self._read("read events") as conn:
            return [_event(row._mapping) for row in conn.execute(stmt)]

    def counts(self) -> dict[str, int]:
        """Live items, deleted items, users and events, read in one consistent snapshot."""
        it = items_table
        stmt = select(
            select(func.count())
            .select_from(it)
            .where(it.c.deleted == false())
            .scalar_subquery()
            .label("items"),
            select(func.count())
            .select_from(it)
            .where(it.c.deleted == true())
            .scalar_subquery()
            .label("deleted_items"),
            select(func.count()).select_from(users_table).scalar_subquery().label("users"),
            select(func.count()).select_from(events_table).scalar_subquery().label("events"),
        )
        with self._read("count rows") as conn:
            row = conn.execute(stmt).one()
        return {key: int(value) for key, value in row._mapping.items()}

    # ------------------------------------------------------------- experiments

    def create_experiment(self, experiment: ExperimentRecord) -> bool:
        """Store a new experiment, starting after the newest event; False if the id exists."""
        with self._logged_write("create an experiment") as conn:
            last = conn.execute(select(func.max(events_table.c.seq))).scalar()
            stmt = (
                _insert(self.dialect, experiments_table)
                .values(
                    experiment_id=experiment.experiment_id,
                    arms=[dict(a) for a in experiment.arms],
                    status=experiment.status,
                    start_seq=int(last or 0),
                    created_at=time.time(),
                )
                .on_conflict_do_nothing(index_elements=[experiments_table.c.experiment_id])
                .returning(experiments_table.c.experiment_id)
            )
            created = conn.execute(stmt).first() is not None
            if created:
                self._log(conn, CHANGE_EXPERIMENT, [experiment.experiment_id], time.time())
            return created

    def set_experiment_status(self, experiment_id: str, status: str) -> bool:
        stmt = (
            update(experiments_table)
            .where(experiments_table.c.experiment_id == experiment_id)
            .values(status=status)
            .returning(experiments_table.c.experiment_id)
        )
        with self._logged_write("change an experiment") as conn:
            changed = conn.execute(stmt).first() is not None
            if changed:
                self._log(conn, CHANGE_EXPERIMENT, [experiment_id], time.time())
            return changed

    def log_model(self, folder: str) -> int:
        """Log that `folder` is now the served model (every process following the log reloads
        it); returns the entry's seq."""
        with self._logged_write("log a model reload") as conn:
            self._log(conn, CHANGE_MODEL, [folder], time.time())
            return int(conn.execute(select(func.max(changes_table.c.seq))).scalar_one())

    def served_model(self, since_seq: int) -> str | None:
        """The folder of the newest model entry after `since_seq`, if any."""
        t = changes_table
        stmt = (
            select(t.c.key)
            .where(t.c.seq > since_seq, t.c.kind == CHANGE_MODEL)
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        with self._read("read the change log") as conn:
            found = conn.execute(stmt).scalar()
        return None if found is None else str(found)

    def experiments(self) -> list[ExperimentRecord]:
        """Every experiment, oldest first."""
        stmt = select(experiments_table).order_by(
            experiments_table.c.created_at, experiments_table.c.experiment_id
        )
        with self._read("read experiments") as conn:
            return [_experiment(row._mapping) for row in conn.execute(stmt)]

    def add_exposures(self, rows: Sequence[tuple[str, str, str, int, int]]) -> None:
        """Add (experiment, arm, user, lists, items shown) to the exposure counts."""
        if not rows:
            return
        table = exposures_table
        with self._write("count exposures") as conn:
            for experiment_id, arm, user_id, lists, shown in rows:
                stmt = _insert(self.dialect, table).values(
                    experiment_id=experiment_id, arm=arm, user_id=user_id, lists=lists, shown=shown
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=[table.c.experiment_id, table.c.arm, table.c.user_id],
                    set_={"lists": table.c.lists + lists, "shown": table.c.shown + shown},
                )
                conn.execute(stmt)

    def exposures(self, experiment_id: str) -> list[tuple[str, str, int, int]]:
        """(arm, user, lists, items shown) of every exposed user of an experiment."""
        t = exposures_table
        stmt = select(t.c.arm, t.c.user_id, t.c.lists, t.c.shown).where(
            t.c.experiment_id == experiment_id
        )
        with self._read("read exposures") as conn:
            return [(str(a), str(u), int(n), int(i)) for a, u, n, i in conn.execute(stmt).all()]

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """Release every connection; the store cannot be used afterwards. Idempotent."""
        self._closed = True
        self._close_listener()
        self._engine.dispose()

    def __enter__(self) -> Store:
        """Close the store when the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """See `__enter__`."""
        self.close()

    def __repr__(self) -> str:
        """Shows the masked URL only."""
        return f"Store({self._display_url!r})"

    # --------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        """A transaction that commits on success; SQLite takes the write lock at BEGIN."""
        with self._guard(action), self._writer.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _logged_write(self, action: str) -> Iterator[Connection]:
        """A write that appends to the change log: on PostgreSQL it first takes the writers'
        advisory lock, so that log (and event) seq order is commit order and a process that
        has applied seq N has seen every smaller one."""
        newest = select(func.coalesce(func.max(changes_table.c.seq), 0))
        with self._write(action) as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_WRITES})
            before = int(conn.execute(newest).scalar_one())
            yield conn
            after = int(conn.execute(newest).scalar_one())
            if self.dialect == "postgresql" and after > before:
                conn.execute(
                    text("SELECT pg_notify(:channel, :seq)"),
                    {"channel": _PG_CHANNEL, "seq": str(after)},
                )
        self._local.logged = (before, after)

    def wait_for_change(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Return once another write may have been logged, or `stop` is set: on PostgreSQL
        when a logged write's NOTIFY arrives (or after `_PG_LISTEN_WAIT` seconds without one:
        a notification lost while reconnecting is then made up by reading the log), on SQLite
        after `timeout` seconds (it has no notifications; the caller polls). One thread only:
        the follower's.
        """
        stop = stop or threading.Event()
        if self.dialect != "postgresql":
            stop.wait(timeout)
            return
        try:
            listener = self._listener()
            for _ in listener.notifies(timeout=_PG_LISTEN_WAIT, stop_after=1):
                pass
        except Exception as exc:  # the next call connects again; the caller reads the log anyway
            log.warning("lost the change notifications of %s: %s", self._display_url, exc)
            self._close_listener()
            stop.wait(_PG_LISTEN_WAIT)  # a server that is down: tried once a second

    def _listener(self) -> Any:
        """A connection of its own, outside the pool, that LISTENs to the change channel."""
        if self._listening is None:
            fairy = self._engine.raw_connection()
            fairy.detach()  # out of the pool: it listens for as long as the store is open
            dbapi: Any = fairy.dbapi_connection
            dbapi.autocommit = True
            dbapi.execute(f"LISTEN {_PG_CHANNEL}")
            self._listening = fairy
        return self._listening.dbapi_connection

    def _close_listener(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            with contextlib.suppress(Exception):
                listening.close()

    def logged(self) -> tuple[int, int]:
        """(before, after) of this thread's last logged write: the log's newest seq when it
        began, and when it committed; the entries in between are all that write's (none when
        they are equal). (0, 0) before any."""
        logged: tuple[int, int] = getattr(self._local, "logged", (0, 0))
        return logged

    @staticmethod
    def _log(conn: Connection, kind: str, keys: Sequence[str], now: float) -> None:
        if keys:
            conn.execute(
                changes_table.insert(),
                [{"kind": kind, "key": k, "created_at": now} for k in keys],
            )

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        """A read-only snapshot (rolled back at the end)."""
        with self._guard(action), self._engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn database failures into StoreError that names the (masked) database."""
        if self._closed:
            raise StoreError(f"cannot {action}: the store at {self._display_url} is closed")
        lock = self._serial if self._serial is not None else contextlib.nullcontext()
        try:
            with lock:
                yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(
                f"{self._display_url}: cannot {action}: {self._scrub(_reason(exc))}"
            ) from exc

    def _scrub(self, message: str) -> str:
        """Remove the password from a driver message, should a driver ever echo it."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message


# ---------------------------------------------------------------------- helpers


def _sqlite_engine(url: URL, display: str, *, allow_memory: bool) -> Engine:
    """A pooled SQLite engine with durable, concurrent-friendly settings on every connection."""
    database = url.database or ""
    memory = database in ("", ":memory:") or "mode=memory" in str(url.query.get("mode", ""))
    if memory:
        if not allow_memory:
            raise StoreError(
                f"{display!r} is an in-memory SQLite database, which is lost when the service "
                "stops: give a file, e.g. sqlite:///store.db or sqlite:////var/lib/warmstart/store.db"
            )
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            poolclass=StaticPool,
            hide_parameters=True,
        )
    else:
        folder = Path(database).absolute().parent  # sqlite3 does not expand ~, nor do we
        if not folder.is_dir():
            raise StoreError(
                f"cannot open SQLite database {display!r}: the folder {str(folder)!r} does not "
                "exist (create it first)"
            )
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1e3},
            hide_parameters=True,  # errors and logs never carry a row's values (profile text)
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below), so sqlite3 must not; pragmas run outside transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            _set_wal(cursor)  # readers never block the writer
            cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front: a deferred transaction that read first could
        # not upgrade while another wrote and would fail with "database is locked" at once.
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _set_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode=WAL`, retried while the file is locked.

    Switching a fresh file to WAL needs it to itself, and SQLite answers "database is locked"
    at once instead of waiting for the busy timeout: 4 processes or threads opening a new
    database together failed this way in about 4 % of opens.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1e3
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _postgres_engine(url: URL, display: str) -> Engine:
    """A pooled PostgreSQL engine on psycopg 3."""
    driver = url.get_driver_name()
    if url.drivername not in ("postgresql", "postgres") and driver != "psycopg":
        raise StoreError(
            f"unsupported PostgreSQL driver {driver!r} in {display!r}: write postgresql://... "
            "(warmstart uses psycopg 3)"
        )
    url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
    try:
        # pre_ping: a pooled connection that died (server restart) is replaced, not handed out.
        return create_engine(
            url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True
        )
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot use {display!r}: psycopg 3 is not installed ({exc})") from exc


def _insert(dialect: str, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT support (the generic one does not)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _upsert(dialect: str, table: Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE every other column to the new row's value."""
    stmt = _insert(dialect, table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[key]],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key},
    )


# SQLSTATE classes whose messages are about the server, never a row: connection, resources,
# operator intervention, system errors, authorisation, a missing database.
_SERVER_STATES = ("08", "53", "57", "58", "28", "3D")


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message where it cannot quote a row (it is logged and may be shown).

    SQLite's messages never quote values. PostgreSQL's DETAIL and CONTEXT lines do (a JSON
    error shows the document), and so do some primary messages about data ("invalid input
    syntax for type json: ..."): for data errors only the SQLSTATE is kept.
    """
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        state = getattr(exc.orig, "sqlstate", None)
        if state is None:
            return " ".join(str(exc.orig).split())
        diag = getattr(exc.orig, "diag", None)
        primary = getattr(diag, "message_primary", None) or str(exc.orig).split("\n")[0]
        if str(state)[:2] in _SERVER_STATES:
            return f"{' '.join(primary.split())} (SQLSTATE {state})"
        return f"{type(exc.orig).__name__} (SQLSTATE {state})"
    return " ".join(str(exc).split("\n")[0].split())


def _item(row: Any) -> ItemRecord:
    return ItemRecord(
        item_id=row["item_id"],
        text=row["text"],
        attributes=dict(row["attributes"] or {}),
        deleted=bool(row["deleted"]),
        updated_at=float(row["updated_at"]),
        vector=None if row["vector"] is None else bytes(row["vector"]),
        encoder=row["encoder"],
    )


def _user(row: Any) -> UserRecord:
    return UserRecord(
        user_id=row["user_id"],
        text=row["text"],
        attributes=dict(row["attributes"] or {}),
        updated_at=float(row["updated_at"]),
    )


def _experiment(row: Any) -> ExperimentRecord:
    return ExperimentRecord(
        experiment_id=str(row["experiment_id"]),
        arms=[dict(a) for a in row["arms"]],
        status=str(row["status"]),
        start_seq=int(row["start_seq"]),
        created_at=float(row["created_at"]),
    )


def _event(row: Any) -> EventRecord:
    return EventRecord(
        user_id=row["user_id"],
        item_id=row["item_id"],
        type=row["type"],
        value=None if row["value"] is None else float(row["value"]),
        timestamp=None if row["timestamp"] is None else float(row["timestamp"]),
        event_id=row["event_id"],
        seq=int(row["seq"]),
    )
