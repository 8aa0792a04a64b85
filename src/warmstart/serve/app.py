"""The FastAPI app factory: `create_app(settings)` builds everything; importing this module builds nothing.

Every route but `/healthz`, `/readyz` and the page at `/` needs `Authorization: Bearer KEY`,
checked before the body is read (`edge.Edge`). Writes go to the store first and are committed
before the engine applies them, so an acknowledged item or event survives a crash
(`Engine.restore` replays the store at start-up).
"""

import asyncio
import contextlib
import hmac
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.concurrency import run_in_threadpool

from warmstart import __version__
from warmstart.data.templates import short_label
from warmstart.errors import ModelFormatError, UnknownIdError
from warmstart.models.base import Explanation, Recommender
from warmstart.models.hybrid import WarmStartRecommender
from warmstart.registry import load_model as load_any_model
from warmstart.serve import schemas as s
from warmstart.serve.edge import Edge, describe, strict_json_route
from warmstart.serve.engine import Engine, NoTextError, Ranked
from warmstart.serve.experiments import ExperimentConflict, Experiments, assign, blend_of
from warmstart.serve.retrain import events_through
from warmstart.serve.store import (
    EventRecord,
    ExperimentRecord,
    ItemRecord,
    Store,
    StoreError,
    UserRecord,
)
from warmstart.serve.web import install_web
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
    # Visitors' and users' text vectors kept in memory: at most this many, and this many bytes.
    text_cache_texts: int = Field(default=20_000, ge=1)
    text_cache_bytes: int = Field(default=64 * 2**20, ge=2**20)
    exact_below: int = Field(default=20_000, ge=0)  # catalogues smaller than this: exact search
    # Where built HNSW graphs are kept, keyed by their content, so a restart on the same model
    # loads them instead of building (about a minute per 100,000 items). None: the warmstart
    # cache folder ($WARMSTART_CACHE_DIR, else ~/.cache/warmstart), subfolder hnsw.
    index_cache: Path | None = None
    # Cold-start blend weights for newcomers (few-shot, text-only, anonymous); None: the model's.
    neighbour_weight: float | None = Field(default=None, ge=0)
    popularity_weight: float | None = Field(default=None, ge=0)
    popularity_fade: float | None = Field(default=None, ge=0, le=1)

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
    """Prometheus metrics in a registry of the app's own (two apps in one process don't clash)."""

    def __init__(self) -> None:
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
            "warmstart_catalogue_items", "Items that can be recommended", registry=self.registry
        )
        self.text_cache_entries = Gauge(
            "warmstart_text_cache_entries",
            "Visitor and user text vectors held in memory",
            registry=self.registry,
        )
        self.text_cache_bytes = Gauge(
            "warmstart_text_cache_bytes",
            "Memory those vectors take (bounded by --text-cache-mib)",
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


class NotReadyError(RuntimeError):
    """The engine is still being built (or failed to be)."""


class Service:
    """What the routes share: settings, store, the current engine, and metrics. One per app.

    The first engine is built by `load` (in the background, see `create_app`); until it is in
    place the service is not `ready`. `engine` is swapped whole by `reload`: a request takes the
    engine once and finishes on it. Writes (store, then engine) hold `writes`, and so does a
    reload while it builds the new engine from the store, so no acknowledged write can fall
    between the old and the new one.
    """

    def __init__(
        self, settings: ServeSettings, store: Store, model: WarmStartRecommender | None = None
    ) -> None:
        self.settings, self.store = settings, store
        self.model_dir = settings.model_dir
        self._first_model = model
        self._engine: Engine | None = None
        self.load_failed = False
        self.writes = threading.RLock()
        self.experiments = Experiments(store)
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
            engine = build_engine(self.model_dir, self.store, self.settings, self._first_model)
            running = self.experiments.running
            if running is not None:
                self._load_arm_models(running.arms)
            self._first_model = None
            self._engine = engine
            self.metrics.items.set(engine.n_items)
        log.info("ready: serving the model at %s (%d items)", self.model_dir, engine.n_items)

    def authorised(self, token: str) -> bool:
        """Any key (admin keys included)."""
        return _matches(token, self._keys)

    def is_admin(self, token: str) -> bool:
        return _matches(token, self._admin_keys)

    def engines(self) -> list[Engine]:
        """Every engine a write must reach: the main one and those of model arms."""
        return [self.engine, *self.arm_engines.values()]

    def _load_arm_models(self, arms: list[dict[str, Any]]) -> None:
        with self.writes:
            for arm in arms:
                folder = arm.get("model")
                if folder and folder not in self.arm_engines:
                    self.arm_engines[folder] = build_engine(Path(folder), self.store, self.settings)

    def start_experiment(self, record: ExperimentRecord) -> None:
        """Load the arms' models first (a bad folder fails here), then start it."""
        self._load_arm_models(record.arms)
        self.experiments.create(record)

    def stop_experiment(self, experiment_id: str) -> None:
        self.experiments.stop(experiment_id)
        with self.writes:
            self.arm_engines.clear()

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

    def reload(self, model_dir: Path | None = None) -> Engine:
        """Load the model at `model_dir` (default: the current one, re-read) and swap it in.

        Any way the folder can be broken is a ModelFormatError; the served model is untouched.
        """
        directory = Path(model_dir) if model_dir is not None else self.model_dir
        with self.writes:
            engine = build_engine(directory, self.store, self.settings)
            self._engine, self.model_dir = engine, directory
            self.metrics.items.set(engine.n_items)
        log.info("now serving the model at %s (%d items)", directory, engine.n_items)
        return engine


def _matches(token: str, keys: list[bytes]) -> bool:
    """Constant time per key, and every key is compared, so timing says nothing."""
    given = token.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def load_model(model_dir: Path) -> WarmStartRecommender:
    """The saved model the service can serve; ModelFormatError for anything else."""
    return _servable(load_any_model(model_dir), model_dir)


def _servable(model: Recommender, model_dir: Path) -> WarmStartRecommender:
    if not isinstance(model, WarmStartRecommender):
        raise ModelFormatError(
            f"{model_dir}: the service needs a 'warmstart' or 'warmstart-ft' model, "
            f"not {model.name!r}: fit one with `warmstart fit --model-name warmstart`"
        )
    return model


def build_engine(
    model_dir: Path,
    store: Store,
    settings: ServeSettings,
    model: WarmStartRecommender | None = None,
) -> Engine:
    """Load the model (unless given), its indexes and encoder, and replay the store into it.

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


def create_app(
    settings: ServeSettings,
    model: Recommender | None = None,
    on_load_failure: Callable[[], None] | None = None,
) -> FastAPI:
    """Open the store and read the model (errors here are raised at once), and build the app.

    The engine (indexes, text encoder, the store replayed into the model) is built in a thread
    when the app starts, so `/healthz` answers at once and `/readyz` says 503 until it is done;
    every other route also answers 503 until then. If that fails, the error is logged,
    `/readyz` says so, and `on_load_failure` is called (`warmstart serve` then exits).

    SIGHUP reloads the model from its folder (when the app runs in the main thread, as under
    `warmstart serve`); `POST /v1/admin/reload` does the same over HTTP.
    """
    store = Store.open(settings.db_url)
    try:
        if model is None:
            model = load_any_model(settings.model_dir)
        first = _servable(model, settings.model_dir)
    except BaseException:
        store.close()
        raise
    service = Service(settings, store, first)

    def load() -> None:
        try:
            service.load()
        except Exception as exc:
            service.load_failed = True
            log.error("could not load the model; not ready: %s", _loggable(exc))
            if on_load_failure is not None:
                on_load_failure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_hangup() -> None:
            loop.run_in_executor(None, _reload_logged, service)

        try:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            log.debug("no SIGHUP handler: not in the main thread, or no such signal here")
        loader = threading.Thread(target=load, name="warmstart-load", daemon=True)
        loader.start()
        service.experiments.start()
        yield
        service.experiments.close()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.to_thread(loader.join)
        store.close()

    app = FastAPI(
        title="warmstart",
        version=__version__,
        description="Cold-start recommendations from text and interactions.",
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load scripts from a CDN; /openapi.json needs a key
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(
        Edge,
        gate=service,
        metrics=service.metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
    )
    _install_errors(app)
    _install_routes(app, service)
    install_web(app)
    return app


def _loggable(exc: BaseException) -> str:
    """What a log line may say about an error: the message of our own errors about files and
    databases (they name paths and masked URLs), only the type and place of anything else."""
    if isinstance(exc, ModelFormatError | StoreError):
        return str(exc)
    return describe(exc)


def _reload_logged(service: Service) -> None:
    if not service.ready:  # the first load reads the folder anyway
        log.info("SIGHUP while the model is still loading: nothing to reload yet")
        return
    try:
        service.reload()
    except Exception as exc:  # a bad model folder must not take the running service down
        log.error("reload on SIGHUP failed; still serving the previous model: %s", _loggable(exc))


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(UnknownIdError)
    async def unknown(request: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(NoTextError)
    async def no_text(request: Request, exc: NoTextError) -> JSONResponse:
        # The same shape as a validation error, which is what the OpenAPI documents for 422.
        error = {
            "loc": ["body", "items", exc.index, "text"],
            "msg": str(exc),
            "type": "value_error",
        }
        return JSONResponse({"detail": [error]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The offending field's location and message; the input itself is not echoed back (it
        # may be someone's profile text), and a location's user-chosen parts (attribute names)
        # are cut short. The log says which fields, by name only.
        errors = [
            {
                "loc": [_short(part) for part in e.get("loc", ())],
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        fields = sorted({".".join(_field_part(p) for p in e["loc"]) for e in errors})
        log.info(
            "%s %s: 422, %d errors in %s", request.method, _route(request), len(errors), fields[:5]
        )
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        log.error("%s %s: 503, %s", request.method, _route(request), exc)
        return JSONResponse(
            {"detail": "the database is unavailable; nothing was changed, try again"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return JSONResponse(
            {"detail": "not ready: the model is still loading (see /readyz)"},
            status_code=503,
            headers={"Retry-After": "5"},
        )


_LOG_FIELDS = s.FIELD_NAMES | {"body", "query", "path", "k", "exclude_seen", "explain"}


def _field_part(part: Any) -> str:
    """A location part as a log may show it: field names and positions, nothing a client chose."""
    if isinstance(part, int) or part in _LOG_FIELDS:
        return str(part)
    return "*"


def _short(part: Any, limit: int = 64) -> Any:
    if isinstance(part, str) and len(part) > limit:
        return part[: limit - 3] + "..."
    return part


def _route(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


def _explanation(e: Explanation) -> s.ExplanationOut:
    # Titles are short already; these also bound those of models saved before they were.
    e = replace(e, neighbours=tuple((i, short_label(t), sim) for i, t, sim in e.neighbours))
    return s.ExplanationOut(
        summary=e.summary(),
        neighbours=[s.Neighbour(item_id=i, title=t, similarity=sim) for i, t, sim in e.neighbours],
        text_similarity=e.text_similarity,
        notes=list(e.notes),
    )


def _recommendations(user_id: str | None, ranked: Ranked) -> s.RecommendationsOut:
    explanations: list[Explanation | None] = (
        list(ranked.explanations) if ranked.explanations else [None] * len(ranked.item_ids)
    )
    return s.RecommendationsOut(
        user_id=user_id,
        route=ranked.route,
        recommendations=[
            s.Recommendation(
                item_id=i, score=score, explanation=_explanation(e) if e is not None else None
            )
            for i, score, e in zip(ranked.item_ids, ranked.scores, explanations, strict=True)
        ],
    )


def _check_batch(n: int, limit: int, field: str) -> None:
    if n > limit:
        raise HTTPException(413, f"{field}: {n} entries, at most {limit} per request")


def _install_routes(app: FastAPI, service: Service) -> None:
    # The edge has checked the key before the body was read (401); the scheme is declared here
    # so the OpenAPI document says how to authenticate.
    bearer = HTTPBearer(auto_error=False)

    async def require_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not service.is_admin(credentials.credentials if credentials is not None else ""):
            raise HTTPException(
                403, "this route needs an admin key (start the server with --admin-key)"
            )

    unauthorised: dict[int | str, dict[str, Any]] = {
        401: {"model": s.ErrorOut},
        413: {"model": s.ErrorOut},
        503: {"model": s.ErrorOut},
    }
    strict = strict_json_route(service.settings.max_json_values)
    router = APIRouter(dependencies=[Depends(bearer)], responses=unauthorised, route_class=strict)
    admin = APIRouter(
        dependencies=[Depends(require_admin)],
        responses={**unauthorised, 403: {"model": s.ErrorOut}},
        route_class=strict,
    )
    store, metrics, settings = service.store, service.metrics, service.settings
    K = Annotated[int, Query(ge=1, le=s.MAX_K, description="how many items")]
    not_found: dict[int | str, dict[str, Any]] = {404: {"model": s.ErrorOut}}

    @app.get("/healthz", response_model=s.Health)
    async def healthz() -> s.Health:  # liveness: answered on the event loop, loading or not
        return s.Health(status="ok", ready=service.ready)

    @app.get("/readyz", response_model=s.Ready, responses={503: {"model": s.Ready}})
    async def readyz() -> s.Ready | JSONResponse:
        """200 once the model, its indexes and the text encoder are loaded; 503 before."""
        if service.ready:
            engine = service.engine
            return s.Ready(status="ready", model=engine.model.name, items=engine.n_items)
        failed = service.load_failed
        body = s.Ready(
            status="failed" if failed else "loading",
            detail="the model could not be loaded: see the server log" if failed else None,
        )
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    )
    def prometheus() -> Response:
        engine = service.engine
        metrics.items.set(engine.n_items)
        metrics.text_cache_entries.set(len(engine.text_cache))
        metrics.text_cache_bytes.set(engine.text_cache.nbytes)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.post("/v1/items", response_model=s.ItemsOut)
    def upsert_items(body: s.ItemsIn) -> s.ItemsOut:
        _check_batch(len(body.items), settings.max_batch, "items")
        records = [ItemRecord(i.item_id, i.text, dict(i.attributes)) for i in body.items]
        with service.writes:
            engine = service.engine
            rendered = engine.check_items(records)  # before storing: no text, nothing stored
            store.upsert_items(records)
            created, updated = engine.upsert_items(records, rendered)
            for other in service.arm_engines.values():
                other.upsert_items(records)
            metrics.items.set(engine.n_items)
        log.info("upserted %d items (%d new)", len(records), len(created))
        return s.ItemsOut(upserted=len(records), created=created, updated=updated)

    @router.delete("/v1/items/{item_id}", responses=not_found)
    def delete_item(item_id: s.PathId) -> dict[str, str]:
        with service.writes:
            engine = service.engine
            engine.item(item_id)  # 404 when unknown or already deleted
            store.delete_item(item_id)
            for each in service.engines():
                each.delete_item(item_id)
            metrics.items.set(engine.n_items)
        return {"deleted": item_id}

    @router.post("/v1/users", response_model=s.UsersOut)
    def upsert_users(body: s.UsersIn) -> s.UsersOut:
        _check_batch(len(body.users), settings.max_batch, "users")
        records = [UserRecord(u.user_id, u.text, dict(u.attributes)) for u in body.users]
        with service.writes:
            store.upsert_users(records)
            for engine in service.engines():
                engine.upsert_users(records)
        return s.UsersOut(upserted=len(records))

    @router.get("/v1/users/{user_id}", response_model=s.UserOut, responses=not_found)
    def get_user(user_id: s.PathId) -> s.UserOut:
        text, attributes, known, n = service.engine.user_info(user_id)
        return s.UserOut(
            user_id=user_id,
            text=text,
            attributes=dict(attributes),
            known_to_model=known,
            interactions=n,
        )

    @router.post("/v1/events", response_model=s.EventsOut, responses=not_found)
    def add_events(body: s.EventsIn) -> s.EventsOut:
        _check_batch(len(body.events), settings.max_batch, "events")
        records = [
            EventRecord(
                user_id=e.user_id,
                item_id=e.item_id,
                type=e.type,
                value=e.value,
                timestamp=e.timestamp,
                event_id=e.event_id,
            )
            for e in body.events
        ]
        with service.writes:
            engine = service.engine
            for j, e in enumerate(records):
                if not engine.has_item(e.item_id):
                    raise UnknownIdError(f"events[{j}].item_id: unknown item id {e.item_id!r}")
            fresh = store.add_events(records)
            new = [r for r, f in zip(records, fresh, strict=True) if f]
            for each in service.engines():
                each.add_events(new)
        for r in new:
            metrics.events.labels(r.type).inc()
        return s.EventsOut(accepted=len(new), duplicates=len(records) - len(new))

    @router.get(
        "/v1/users/{user_id}/recommendations",
        response_model=s.RecommendationsOut,
    )
    async def recommend_user(
        user_id: s.PathId, k: K = 10, exclude_seen: bool = True, explain: bool = True
    ) -> s.RecommendationsOut:
        # The read routes are async and send only the engine's work to a thread: a sync route
        # would also validate its response in a second thread hop.
        engine, blend, tag = service.route(user_id)
        ranked = await run_in_threadpool(
            engine.recommend_user,
            user_id,
            k=k,
            exclude_seen=exclude_seen,
            explain=explain,
            blend=blend,
        )
        if tag is not None:
            service.experiments.record(tag.experiment_id, tag.arm, user_id, len(ranked.item_ids))
        out = _recommendations(user_id, ranked)
        out.experiment = tag
        return out

    @router.post(
        "/v1/recommendations",
        response_model=s.RecommendationsOut,
        responses=not_found,
    )
    async def recommend_profile(body: s.ProfileIn) -> s.RecommendationsOut:
        ranked = await run_in_threadpool(
            service.engine.recommend_profile,
            body.text,
            body.attributes,
            body.item_ids,
            k=body.k,
            exclude_seen=body.exclude_seen,
            explain=body.explain,
        )
        return _recommendations(None, ranked)

    @router.get(
        "/v1/items/{item_id}/similar",
        response_model=s.SimilarOut,
        responses=not_found,
    )
    async def similar(item_id: s.PathId, k: K = 10) -> s.SimilarOut:
        ranked = await run_in_threadpool(service.engine.similar_items, item_id, k=k)
        return s.SimilarOut(
            item_id=item_id,
            items=[
                s.SimilarItem(item_id=i, score=sc)
                for i, sc in zip(ranked.item_ids, ranked.scores, strict=True)
            ],
        )

    @admin.post(
        "/v1/admin/reload",
        response_model=s.ReloadOut,
        responses={422: {"model": s.ErrorOut}},
    )
    def reload(body: s.ReloadIn | None = None) -> s.ReloadOut | JSONResponse:
        start = time.perf_counter()
        target = Path(body.model) if body is not None and body.model else None
        try:
            engine = service.reload(target)
        except ModelFormatError as exc:
            log.warning("reload refused; still serving the previous model: %s", exc)
            return JSONResponse({"detail": f"model: {exc}"}, status_code=422)
        return s.ReloadOut(
            model=str(service.model_dir),
            items=engine.n_items,
            seconds=round(time.perf_counter() - start, 3),
        )

    conflict: dict[int | str, dict[str, Any]] = {409: {"model": s.ErrorOut}}

    @admin.post(
        "/v1/experiments",
        status_code=201,
        response_model=s.ExperimentOut,
        responses={**conflict, 422: {"model": s.ErrorOut}},
    )
    def create_experiment(body: s.ExperimentIn) -> s.ExperimentOut | JSONResponse:
        arms = [a.model_dump(exclude_none=True) for a in body.arms]
        try:
            service.start_experiment(ExperimentRecord(body.experiment_id, arms))
        except ExperimentConflict as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)
        except ModelFormatError as exc:
            log.warning("experiment refused: %s", exc)
            return JSONResponse({"detail": f"arms: model: {exc}"}, status_code=422)
        return s.ExperimentOut(**service.experiments.report(body.experiment_id))

    @router.get(
        "/v1/experiments/{experiment_id}",
        response_model=s.ExperimentOut,
        responses=not_found,
    )
    def experiment(experiment_id: s.PathId) -> s.ExperimentOut:
        try:
            return s.ExperimentOut(**service.experiments.report(experiment_id))
        except KeyError:
            raise UnknownIdError(f"unknown experiment id {experiment_id!r}") from None

    @admin.post(
        "/v1/experiments/{experiment_id}/stop",
        response_model=s.ExperimentOut,
        responses=not_found,
    )
    def stop_experiment(experiment_id: s.PathId) -> s.ExperimentOut:
        try:
            service.stop_experiment(experiment_id)
            return s.ExperimentOut(**service.experiments.report(experiment_id))
        except KeyError:
            raise UnknownIdError(f"unknown experiment id {experiment_id!r}") from None

    app.include_router(router)
    app.include_router(admin)
