"""The FastAPI app factory: `create_app(settings)` builds everything; importing this module builds nothing.

The map: `service` holds the settings, the engines and every write; `deps` what a route needs
(the service, the key checks, the batch limit); `routes` one module per resource; `edge` what
every request meets first. Every route but `/healthz`, `/readyz` and the page at `/` needs
`Authorization: Bearer KEY`, checked before the body is read (`edge.Edge`). Errors are
exceptions, mapped to responses in one place, `_install_errors`.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from warmstart import __version__
from warmstart.errors import UnknownIdError
from warmstart.models.base import Recommender
from warmstart.serve import schemas as s
from warmstart.serve.deps import (
    SEQ_HEADER,
    AdminKeyRequired,
    KeyRequired,
    Reads,
    SeqNotReached,
    SeqUnknown,
    TooManyEntries,
)
from warmstart.serve.edge import Edge
from warmstart.serve.engine import NoTextError
from warmstart.serve.experiments import ExperimentConflict
from warmstart.serve.routes import (
    admin,
    events,
    experiments,
    health,
    items,
    recommendations,
    users,
)
from warmstart.serve.service import (
    ModelRefused,
    NotReadyError,
    ServeSettings,
    Service,
    build_engine,
    load_model,
    loggable,
    servable,
)
from warmstart.serve.store import Store, StoreError
from warmstart.serve.web import install_web

__all__ = ["ServeSettings", "build_engine", "create_app", "load_model"]

log = logging.getLogger("warmstart.serve")


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
            first = load_model(settings.model_dir)  # arrays mapped, as every reload maps them
        else:
            first = servable(model, settings.model_dir)
    except BaseException:
        store.close()
        raise
    service = Service(settings, store, first)
    app = FastAPI(
        title="warmstart",
        version=__version__,
        description="Cold-start recommendations from text and interactions.",
        lifespan=_lifespan(service, on_load_failure),
        docs_url=None,  # the interactive docs load scripts from a CDN; /openapi.json needs a key
        redoc_url=None,
    )
    app.state.service = service
    app.state.reads = Reads(settings.reads_at_once())
    app.add_middleware(
        Edge,
        gate=service,
        metrics=service.metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
    )
    _install_errors(app)
    for module in (health, items, users, events, recommendations, admin, experiments):
        app.include_router(module.router)
    install_web(app)
    return app


def _lifespan(
    service: Service, on_load_failure: Callable[[], None] | None
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Load in a thread and handle SIGHUP while the app runs; at the end, flush and close."""

    def load() -> None:
        try:
            service.load()
        except Exception as exc:
            service.load_failed = True
            log.error("could not load the model; not ready: %s", loggable(exc))
            if on_load_failure is not None:
                on_load_failure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def on_hangup() -> None:
            loop.run_in_executor(None, service.reload_on_hangup)

        try:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            log.debug("no SIGHUP handler: not in the main thread, or no such signal here")
        loader = threading.Thread(target=load, name="warmstart-load", daemon=True)
        loader.start()
        service.experiments.start()
        stop = threading.Event()
        follower = threading.Thread(
            target=service.follow,
            args=(stop, service.settings.follow_interval),
            name="warmstart-follow",
            daemon=True,
        )
        follower.start()
        yield
        stop.set()
        await asyncio.to_thread(follower.join)
        service.experiments.close()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.to_thread(loader.join)
        service.store.close()

    return lifespan


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


# Errors whose response is their message, with this status (and headers).
_MESSAGE_ERRORS: dict[type[Exception], tuple[int, dict[str, str] | None]] = {
    KeyRequired: (401, {"WWW-Authenticate": "Bearer"}),
    AdminKeyRequired: (403, None),
    UnknownIdError: (404, None),
    ExperimentConflict: (409, None),
    TooManyEntries: (413, None),
    ModelRefused: (422, None),
    SeqNotReached: (503, {"Retry-After": "1"}),
}


def _message_handler(
    status: int, headers: dict[str, str] | None
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _detail(status, str(exc), headers)

    return handler


def _install_errors(app: FastAPI) -> None:
    """Every error a route or the service layer raises, and the response it becomes."""

    for error, (status, headers) in _MESSAGE_ERRORS.items():
        app.add_exception_handler(error, _message_handler(status, headers))

    @app.exception_handler(SeqUnknown)
    async def unknown_seq(request: Request, exc: SeqUnknown) -> JSONResponse:
        error = {"loc": ["header", SEQ_HEADER], "msg": str(exc), "type": "value_error"}
        return _detail(422, [error])

    @app.exception_handler(NoTextError)
    async def no_text(request: Request, exc: NoTextError) -> JSONResponse:
        # The same shape as a validation error, which is what the OpenAPI documents for 422.
        error = {
            "loc": ["body", "items", exc.index, "text"],
            "msg": str(exc),
            "type": "value_error",
        }
        return _detail(422, [error])

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
        return _detail(422, errors)

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        log.error("%s %s: 503, %s", request.method, _route(request), exc)
        return _detail(
            503,
            "the database is unavailable; nothing was changed, try again",
            {"Retry-After": "1"},
        )

    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _detail(
            503, "not ready: the model is still loading (see /readyz)", {"Retry-After": "5"}
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
