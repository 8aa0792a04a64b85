"""The service layer: settings, the engines behind the routes, and every write, fanned out.

A write goes to the store first and is committed before any engine applies it, so an
acknowledged item or event survives a crash (`Engine.restore` replays the store at start-up);
then it reaches the main engine and those of a running experiment's model arms. Route handlers
only translate HTTP to records and back; what may go wrong is raised here as an exception that
`app` maps to a status.
"""

import gc
import hmac
import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from warmstart.errors import ModelFormatError, UnknownIdError
from warmstart.models.base import Recommender
from warmstart.models.servable import ServableModel
from warmstart.registry import load_model as load_any_model
from warmstart.serve import schemas as s
from warmstart.serve.edge import describe
from warmstart.serve.engine import Engine
from warmstart.serve.experiments import Experiments, assign, blend_of
from warmstart.serve.queries import QueryEncoders, QueryEncoding
from warmstart.serve.retrain import events_through
from warmstart.serve.store import (
    CHANGE_EVENTS,
    CHANGE_EXPERIMENT,
    CHANGE_ITEM,
    CHANGE_MODEL,
    CHANGE_USER,
    Change,
    EventRecord,
    ExperimentRecord,
    ItemRecord,
    Store,
    StoreError,
    UserRecord,
)
from warmstart.text.cache import default_cache_dir

log = logging.getLogger("warmstart.serve")


class ServeSettings(BaseModel):
    """How to run the service. Strict, so a misspelt setting fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path
    db_url: str = "sqlite:///warmstart.db"
    api_keys: tuple[SecretStr, ...] = Field(min_length=1)
    # Keys that may also reload models and start or stop experiments; none: nobody may.
    admin_keys: tuple[SecretStr, ...] = ()
    max_batch: int = Field(default=1000, ge=1)  # entries per POST; more is 413
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    body_timeout: float = Field(default=60.0, gt=0)  # seconds to receive a whole body; then 408
    header_timeout: float = Field(default=10.0, gt=0)  # seconds to receive the headers
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_connections: int = Field(default=1000, ge=1)  # beyond it, 503
    # Engine reads running at once in a process (`deps.Reads`); the rest wait their turn.
    # None: the cores this process may run on, shared among the workers (`reads_at_once`).
    read_threads: int | None = Field(default=None, ge=1)
    # Visitors' and users' text vectors kept in memory: at most this many, and this many bytes.
    text_cache_texts: int = Field(default=20_000, ge=1)
    text_cache_bytes: int = Field(default=64 * 2**20, ge=2**20)
    exact_below: int = Field(default=20_000, ge=0)  # catalogues smaller than this: exact search
    # Seconds between looks at the store's log for other processes' writes (`Service.follow`).
    follow_interval: float = Field(default=0.05, gt=0)
    # Seconds a request naming a seq (X-Warmstart-Seq) waits for this process to apply it.
    seq_wait: float = Field(default=1.0, ge=0)
    # Serve the folder of the newest model reload logged after this seq, if any, instead of
    # `model_dir`: `--workers` sets it for its workers, so a replaced one serves what the
    # others do. None: always start on `model_dir`.
    reloads_since: int | None = Field(default=None, ge=0)
    # Where built HNSW graphs are kept, keyed by their content, so a restart on the same model
    # loads them instead of building (about a minute per 100,000 items). None: the warmstart
    # cache folder ($WARMSTART_CACHE_DIR, else ~/.cache/warmstart), subfolder hnsw.
    index_cache: Path | None = None
    # Visitors' and users' sentences: int8 ONNX MiniLM when it agrees with the model's fp32
    # encoder and is faster (`auto`, checked at load; see `warmstart.serve.queries`), or fp32.
    query_encoder: QueryEncoding = "auto"
    # Cold-start blend weights for newcomers (few-shot, text-only, anonymous); None: the model's.
    neighbour_weight: float | None = Field(default=None, ge=0)
    popularity_weight: float | None = Field(default=None, ge=0)
    popularity_fade: float | None = Field(default=None, ge=0, le=1)

    def reads_at_once(self, workers: int = 1) -> int:
        """`read_threads`, or else a share of the usable cores for each of `workers` processes:
        one read per core in all (more only take turns on the GIL; BENCHMARKS.md)."""
        if self.read_threads is not None:
            return self.read_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return max(1, (cores or os.cpu_count() or 1) // max(1, workers))

    @property
    def blend(self) -> dict[str, float]:
        pairs = (
            ("neighbour_weight", self.neighbour_weight),
            ("popularity_weight", self.popularity_weight),
            ("popularity_fade", self.popularity_fade),
        )
        return {k: float(v) for k, v in pairs if v is not None}

    @property
    def max_json_values(self) -> int:
        """JSON values a body may hold: a full batch of the largest entries (an item with every
        attribute: 8 values and two per attribute), or a profile naming every item it may."""
        entries = max(self.max_batch, s.MAX_ITEM_IDS)
        return entries * (8 + 2 * s.MAX_ATTRIBUTES) + 64


class _Metrics:
    """Prometheus metrics in a registry of the app's own (two apps in one process don't clash).

    Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set by the parent) every worker writes
    its values to files there and a scrape of any worker reports all of them: counters and
    histograms summed over workers (dead ones included), gauges over live workers (items: the
    largest count, text cache: the sum).
    """

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "warmstart_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "warmstart_request_seconds",
            "Request latency by route",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.events = Counter(
            "warmstart_events_ingested", "New events stored", ["type"], registry=self.registry
        )
        self.items = Gauge(
            "warmstart_catalogue_items",
            "Items that can be recommended",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.text_cache_entries = Gauge(
            "warmstart_text_cache_entries",
            "Visitor and user text vectors held in memory",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.text_cache_bytes = Gauge(
            "warmstart_text_cache_bytes",
            "Memory those vectors take (bounded by --text-cache-mib)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def sample(self, engine: Engine) -> None:
        """Read the gauges off `engine` now (they drift between writes: the text cache fills
        on reads)."""
        self.items.set(engine.n_items)
        self.text_cache_entries.set(len(engine.text_cache))
        self.text_cache_bytes.set(engine.text_cache.nbytes)

    def exposition(self, engine: Engine) -> bytes:
        """The Prometheus text format: this process's metrics, or every worker's."""
        self.sample(engine)
        if not self.multiprocess:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return generate_latest(combined)


class NotReadyError(RuntimeError):
    """The engine is still being built (or failed to be)."""


class ModelRefused(ValueError):
    """A request named a model folder that cannot be served; what is served is unchanged.

    The message is the response's detail: the request field that named the folder, then why.
    """


class Service:
    """What the routes share: settings, store, the current engine, and metrics. One per app.

    The first engine is built by `load` (in the background, see `create_app`); until it is in
    place the service is not `ready`. `engine` is swapped whole by `reload`: a request takes the
    engine once and finishes on it. Writes (store, then engine) hold `writes`, and so does a
    reload while it builds the new engine from the store, so no acknowledged write can fall
    between the old and the new one.
    """

    def __init__(
        self, settings: ServeSettings, store: Store, model: ServableModel | None = None
    ) -> None:
        self.settings, self.store = settings, store
        self.model_dir = settings.model_dir
        self._first_model = model
        self._engine: Engine | None = None
        self.load_failed = False
        self.writes = threading.RLock()
        # The store's log as this process's engines hold it: every entry up to `applied_seq`,
        # and every event up to `events_seq` (`catch_up` applies what other processes wrote).
        self.applied_seq = 0
        self.events_seq = 0
        self._announced: set[int] = set()  # seqs of this process's own model reloads
        self.experiments = Experiments(store)
        self.queries = QueryEncoders(settings.query_encoder, default_cache_dir())
        self.arm_engines: dict[str, Engine] = {}  # model folder -> engine, for model arms
        self.metrics = _Metrics()
        self._admin_keys = [k.get_secret_value().encode() for k in settings.admin_keys]
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys] + self._admin_keys

    @property
    def ready(self) -> bool:
        """Whether the model, its indexes and the text encoder are loaded and the store replayed."""
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise NotReadyError("the model is still loading")
        return engine

    def load(self) -> None:
        """Build the first engine, and those of a running experiment's model arms."""
        with self.writes:
            marks = self._log_marks()
            if self.settings.reloads_since is not None:
                reloaded = self.store.served_model(self.settings.reloads_since)
                if reloaded is not None and Path(reloaded) != self.model_dir:
                    self.model_dir, self._first_model = Path(reloaded), None
            engine = build_engine(
                self.model_dir, self.store, self.settings, self._first_model, self.queries
            )
            running = self.experiments.running
            if running is not None:
                self._load_arm_models(running.arms)
            self._first_model = None
            self._engine = engine
            self.applied_seq, self.events_seq = marks
            self.metrics.items.set(engine.n_items)
            settle_heap()
        log.info("ready: serving the model at %s (%d items)", self.model_dir, engine.n_items)

    def authorised(self, token: str) -> bool:
        """Any key (admin keys included)."""
        return _matches(token, self._keys)

    def is_admin(self, token: str) -> bool:
        return _matches(token, self._admin_keys)

    def engines(self) -> list[Engine]:
        """Every engine a write must reach: the main one and those of model arms."""
        return [self.engine, *self.arm_engines.values()]

    # ---- writes: the store first, then every engine ---------------------------------------
    def upsert_items(self, records: list[ItemRecord]) -> tuple[list[str], list[str]]:
        """Store the items and make them recommendable; (created ids, updated ids).

        Their texts are rendered first, so an item without any is refused (NoTextError) before
        anything is stored.
        """
        with self.writes:
            engine = self.engine
            rendered = engine.check_items(records)
            vectors = engine.item_vectors(records, rendered).astype("<f4")
            records = [
                replace(r, vector=v.tobytes(), encoder=engine.encoder_name)
                for r, v in zip(records, vectors, strict=True)
            ]
            self.store.upsert_items(records)
            created, updated = engine.upsert_items(records, rendered)
            for other in self.arm_engines.values():
                other.upsert_items(records)
            self._advance()
            self.metrics.items.set(engine.n_items)
        log.info("upserted %d items (%d new)", len(records), len(created))
        return created, updated

    def delete_item(self, item_id: str) -> None:
        """Stop recommending an item; UnknownIdError when it is unknown or deleted already."""
        with self.writes:
            engine = self.engine
            engine.item(item_id)
            self.store.delete_item(item_id)
            for each in self.engines():
                each.delete_item(item_id)
            self._advance()
            self.metrics.items.set(engine.n_items)

    def upsert_users(self, records: list[UserRecord]) -> None:
        with self.writes:
            self.store.upsert_users(records)
            for engine in self.engines():
                engine.upsert_users(records)
            self._advance()

    def add_events(self, records: list[EventRecord]) -> int:
        """Store the events and fold them into their users' histories; how many were new.

        An event naming an unknown item refuses the whole batch (UnknownIdError) before anything
        is stored; one whose `event_id` is stored already is skipped, so a client may retry.
        """
        with self.writes:
            engine = self.engine
            for j, e in enumerate(records):
                if not engine.has_item(e.item_id):
                    raise UnknownIdError(f"events[{j}].item_id: unknown item id {e.item_id!r}")
            fresh = self.store.add_events(records)
            new = [r for r, f in zip(records, fresh, strict=True) if f]
            for each in self.engines():
                each.add_events(new)
            self._advance()
        for r in new:
            self.metrics.events.labels(r.type).inc()
        return len(new)

    def written_seq(self) -> int:
        """The log seq of the calling thread's last write: a read anywhere that has applied
        it reflects that write (the client's X-Warmstart-Seq)."""
        return self.store.logged()[1]

    def _advance(self) -> None:
        """After this thread's write reached every engine: when nothing of another process's
        lies between what was applied and this write's log entries, those are applied now."""
        before, after = self.store.logged()
        if before <= self.applied_seq:
            self.applied_seq = max(self.applied_seq, after)

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Apply the log until `seq` is applied (True), for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.applied_seq < seq:
            self.catch_up()
            if self.applied_seq >= seq:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # ---- other processes' writes: the store's log ------------------------------------------
    def _log_marks(self) -> tuple[int, int]:
        """(newest log entry, newest event) now, read before an engine replays the store: what
        it replays includes them, and anything later is applied again by `catch_up` (applying
        an entry twice changes nothing)."""
        return self.store.last_change(), self.store.last_event_seq()

    def catch_up(self, limit: int = 10_000) -> int:
        """Apply the log entries after `applied_seq` to every engine; returns how many.

        Entries name what changed, and the stored rows say what it is now, so an entry applied
        twice (this process's own writes come back through the log) changes nothing.
        """
        with self.writes:
            if self._engine is None:
                return 0
            changes = self.store.changes(self.applied_seq, limit=limit)
            if not changes:
                return 0
            self._apply_admin(changes)
            items = sorted({c.key for c in changes if c.kind == CHANGE_ITEM})
            users = sorted({c.key for c in changes if c.kind == CHANGE_USER})
            # Only the events these entries logged: a later one may name an item whose entry
            # is not in this batch yet, and would be skipped as unknown.
            through = max((int(c.key) for c in changes if c.kind == CHANGE_EVENTS), default=0)
            events: list[EventRecord] = []
            if through > self.events_seq:
                events = self.store.events(since_seq=self.events_seq, through_seq=through)
            rows = self.store.items_by_id(items) if items else []
            profiles = self.store.users_by_id(users) if users else []
            live = [r for r in rows if not r.deleted]
            gone = [r.item_id for r in rows if r.deleted]
            for engine in self.engines():
                if live:
                    engine.upsert_items(live)
                if gone:
                    engine.delete_items(gone)
                if profiles:
                    engine.upsert_users(profiles)
                if events:
                    engine.add_events(events)
            self.applied_seq = max(self.applied_seq, changes[-1].seq)
            self.events_seq = max(self.events_seq, through)
            self.metrics.items.set(self.engine.n_items)
        return len(changes)

    def _apply_admin(self, changes: list[Change]) -> None:
        """Reload a model another process reloaded, and follow experiments it started or
        stopped. A folder this process cannot load is logged and the current model kept."""
        reloads = [c for c in changes if c.kind == CHANGE_MODEL and c.seq not in self._announced]
        if reloads:
            try:
                self._reload(Path(reloads[-1].key), announce=False)
            except Exception as exc:
                log.error("could not reload as another process did: %s", loggable(exc))
        if any(c.kind == CHANGE_EXPERIMENT for c in changes):
            running = self.experiments.refresh()
            arms = running.arms if running is not None else []
            wanted = {str(a["model"]) for a in arms if a.get("model")}
            for folder in set(self.arm_engines) - wanted:
                del self.arm_engines[folder]
            try:
                self._load_arm_models(arms)
            except Exception as exc:
                log.error("could not load an experiment's model arm: %s", loggable(exc))

    def follow(self, stop: threading.Event, interval: float) -> None:
        """Apply new log entries until `stop`: on PostgreSQL as each write's notification
        arrives, on SQLite every `interval` seconds (and, once a second, refresh the gauges
        other workers' scrapes report)."""
        sampled = 0.0
        while not stop.is_set():
            self.store.wait_for_change(interval, stop)
            if stop.is_set():
                break
            try:
                if self.ready and self.store.last_change() > self.applied_seq:
                    self.catch_up()
            except Exception as exc:  # the next poll tries again; reads go on meanwhile
                log.warning("could not apply the store's new entries: %s", exc)
            if self.metrics.multiprocess and self.ready and time.monotonic() - sampled > 1.0:
                self.metrics.sample(self.engine)
                sampled = time.monotonic()

    # ---- models and experiments -------------------------------------------------------------
    def reload(self, model_dir: Path | None = None) -> Engine:
        """Load the model at `model_dir` (default: the current one, re-read) and swap it in.

        A folder that cannot be served is ModelRefused, naming the `model` field; the served
        model is untouched.
        """
        try:
            return self._reload(model_dir, announce=True)
        except ModelFormatError as exc:
            log.warning("reload refused; still serving the previous model: %s", exc)
            raise ModelRefused(f"model: {exc}") from exc

    def reload_on_hangup(self) -> None:
        """`reload` for SIGHUP, in a thread of its own: nobody waits for an answer, so a failure
        is logged and the previous model kept serving."""
        if not self.ready:  # the first load reads the folder anyway
            log.info("SIGHUP while the model is still loading: nothing to reload yet")
            return
        try:
            self._reload(None, announce=False)  # every process got the signal
        except Exception as exc:  # a bad model folder must not take the running service down
            log.error(
                "reload on SIGHUP failed; still serving the previous model: %s", loggable(exc)
            )

    def _reload(self, model_dir: Path | None, *, announce: bool) -> Engine:
        """Any way the folder can be broken is a ModelFormatError. With `announce`, the reload
        is logged in the store, and every other process following the log reloads too."""
        directory = Path(model_dir) if model_dir is not None else self.model_dir
        with self.writes:
            marks = self._log_marks()
            engine = build_engine(directory, self.store, self.settings, queries=self.queries)
            self._engine, self.model_dir = engine, directory
            if announce:
                self._announced.add(self.store.log_model(str(directory)))
            self.applied_seq = max(self.applied_seq, marks[0])
            self.events_seq = max(self.events_seq, marks[1])
            self.metrics.items.set(engine.n_items)
            settle_heap()
        log.info("now serving the model at %s (%d items)", directory, engine.n_items)
        return engine

    def _load_arm_models(self, arms: list[dict[str, Any]]) -> None:
        with self.writes:
            for arm in arms:
                folder = arm.get("model")
                if folder and folder not in self.arm_engines:
                    self.arm_engines[folder] = build_engine(
                        Path(folder), self.store, self.settings, queries=self.queries
                    )

    def start_experiment(self, record: ExperimentRecord) -> None:
        """Load the arms' models first (a bad folder is ModelRefused), then start it
        (ExperimentConflict when it exists already or another one is running)."""
        try:
            self._load_arm_models(record.arms)
        except ModelFormatError as exc:
            log.warning("experiment refused: %s", exc)
            raise ModelRefused(f"arms: model: {exc}") from exc
        self.experiments.create(record)

    def stop_experiment(self, experiment_id: str) -> None:
        try:
            self.experiments.stop(experiment_id)
        except KeyError:
            raise _unknown_experiment(experiment_id) from None
        with self.writes:
            self.arm_engines.clear()

    def experiment_report(self, experiment_id: str) -> dict[str, Any]:
        """Per arm: users served, lists, items shown, clicks, and click rate."""
        try:
            return self.experiments.report(experiment_id)
        except KeyError:
            raise _unknown_experiment(experiment_id) from None

    def route(self, user_id: str) -> tuple[Engine, dict[str, float] | None, s.ExperimentTag | None]:
        """The engine and blend that serve this user: the running experiment's arm, if any."""
        running = self.experiments.running
        if running is None:
            return self.engine, None, None
        arm = assign(running.experiment_id, user_id, running.arms)
        folder = arm.get("model")
        engine = self.arm_engines.get(folder, self.engine) if folder else self.engine
        tag = s.ExperimentTag(experiment_id=running.experiment_id, arm=str(arm["name"]))
        return engine, blend_of(arm), tag


def _unknown_experiment(experiment_id: str) -> UnknownIdError:
    return UnknownIdError(f"unknown experiment id {experiment_id!r}")


def _matches(token: str, keys: list[bytes]) -> bool:
    """Constant time per key, and every key is compared, so timing says nothing."""
    given = token.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def loggable(exc: BaseException) -> str:
    """What a log line may say about an error: the message of our own errors about files and
    databases (they name paths and masked URLs), only the type and place of anything else."""
    if isinstance(exc, ModelFormatError | StoreError):
        return str(exc)
    return describe(exc)


def load_model(model_dir: Path) -> ServableModel:
    """The saved model the service can serve, its arrays memory-mapped (workers share them);
    ModelFormatError for anything else."""
    return servable(load_any_model(model_dir, mmap=True), model_dir)


def servable(model: Recommender, model_dir: Path) -> ServableModel:
    """`model`, if the service can serve it; ModelFormatError saying what to fit instead."""
    if not isinstance(model, ServableModel):
        raise ModelFormatError(
            f"{model_dir}: the service needs a 'warmstart' or 'warmstart-ft' model, "
            f"not {model.name!r}: fit one with `warmstart fit --model-name warmstart`"
        )
    return model


def settle_heap() -> None:
    """Put what is alive now (the served model's millions of ids, texts and index entries) out
    of the cyclic collector's sight with `gc.freeze`, after collecting what a reload left.

    A full collection walks every tracked object while holding the GIL: at 100,000 items one
    triggered by a 200-item POST stalled concurrent reads for about 70 ms (BENCHMARKS.md,
    "Reads during writes"). Frozen objects are still freed when their last reference goes.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def build_engine(
    model_dir: Path,
    store: Store,
    settings: ServeSettings,
    model: ServableModel | None = None,
    queries: QueryEncoders | None = None,
) -> Engine:
    """Load the model (unless given), its indexes and encoder, and replay the store into it.

    `queries` is the service's choice of request-time encoder (made once per encoder); without
    it, the choice is made here for this model.

    Every way a model folder can be broken is a ModelFormatError naming the folder; database
    failures stay StoreError.
    """
    try:
        if model is None:
            model = load_model(model_dir)
        engine = Engine(
            model,
            exact_below=settings.exact_below,
            blend=settings.blend,
            graph_dir=settings.index_cache or default_cache_dir() / "hnsw",
            text_cache_texts=settings.text_cache_texts,
            text_cache_bytes=settings.text_cache_bytes,
            query_encoder=(
                queries or QueryEncoders(settings.query_encoder, default_cache_dir())
            ).for_model(model),
        )
        engine.check_servable()
        engine.restore(store, since_seq=events_through(model_dir))
    except StoreError:
        raise
    except ModelFormatError as exc:
        if str(model_dir) in str(exc):
            raise
        raise ModelFormatError(f"{model_dir}: cannot serve this model: {exc}") from exc
    except Exception as exc:  # a folder can be broken in ways no check foresaw
        raise ModelFormatError(
            f"{model_dir}: cannot serve this model ({type(exc).__name__}: {exc})"
        ) from exc
    return engine
