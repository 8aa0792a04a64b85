"""What the routes depend on: the app's service, the key checks, the batch limit, the routers.

Everything is read off the request's app (`app.state.service`, set by `create_app`), never a
module global, so two apps in one process (tests, benchmarks) keep apart and the routers can be
defined once, at import. The dependencies are async: they only read memory, and a sync one
would cost every request a hop to a worker thread.
"""

import asyncio
import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from warmstart.serve import schemas as s
from warmstart.serve.edge import strict_json_route
from warmstart.serve.service import Service


class KeyRequired(Exception):
    """No key, or a wrong one (401). The edge refuses these before a route runs; this keeps a
    route closed to a request that reached it some other way."""


class AdminKeyRequired(Exception):
    """A route that changes what is served, asked with an ordinary key (403)."""


class TooManyEntries(Exception):
    """More entries in one POST than `max_batch` (413): the client should split the batch."""

    def __init__(self, field: str, entries: int, limit: int) -> None:
        super().__init__(f"{field}: {entries} entries, at most {limit} per request")


SEQ_HEADER = "X-Warmstart-Seq"


class SeqNotReached(Exception):
    """A request's X-Warmstart-Seq was not applied here within `seq_wait` (503, retry)."""


class SeqUnknown(Exception):
    """A request's X-Warmstart-Seq is past the store's newest log entry (422): no write was
    acknowledged with it, e.g. it came from a server on another database."""


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def get_service(request: Request) -> Service:
    return service_of(request)


ServiceDep = Annotated[Service, Depends(get_service)]

T = TypeVar("T")


class Reads:
    """Engine reads (recommendations, similar items) on worker threads, at most `threads` at
    once in this process; the rest wait for a turn in arrival order.

    A read is mostly small numpy steps that hold the GIL, so reads beyond the cores a process
    can use only take turns on it and each takes longer: at 1,000,000 items one worker on the
    starlette pool's 40 threads saturated at 117-131 warm requests/s, on 2 at 184-193/s
    (BENCHMARKS.md). Writes keep the framework's own pool, so a slow write never takes a
    read's turn, and reads never queue behind writes.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._limiter is None:  # made on first use: anyio makes it for the running loop
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self._limiter
        )


async def get_reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


ReadsDep = Annotated[Reads, Depends(get_reads)]

# Declared so that the OpenAPI document says how to authenticate.
_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    return credentials.credentials if credentials is not None else ""


async def require_key(service: ServiceDep, credentials: Credentials) -> None:
    if not service.authorised(_token(credentials)):
        raise KeyRequired("missing or wrong API key")


async def require_admin(service: ServiceDep, credentials: Credentials) -> None:
    if not service.is_admin(_token(credentials)):
        raise AdminKeyRequired("this route needs an admin key (start the server with --admin-key)")


SeqHeader = Annotated[
    int | None,
    Header(
        alias=SEQ_HEADER,
        ge=0,
        le=2**63 - 1,
        description=(
            "Answer only once this process has applied the store's log through this seq (the "
            "X-Warmstart-Seq of a write's response), waiting up to `seq_wait` seconds"
        ),
    ),
]


async def log_position(service: ServiceDep, response: Response, seq: SeqHeader = None) -> None:
    """Wait for the client's X-Warmstart-Seq, if any; the response says what it reflects
    (a write overrides it with its own entry's seq)."""
    if seq is not None and service.applied_seq < seq:
        newest = await asyncio.to_thread(service.store.last_change)
        if seq > newest:
            raise SeqUnknown(
                f"{SEQ_HEADER}: {seq} is past this store's newest log entry ({newest})"
            )
        if not await asyncio.to_thread(service.wait_for, seq, service.settings.seq_wait):
            raise SeqNotReached(
                f"{SEQ_HEADER}: this process has applied the log through "
                f"{service.applied_seq}, not yet {seq}; retry"
            )
    response.headers[SEQ_HEADER] = str(service.applied_seq)


def acknowledge_write(service: ServiceDep, response: Response) -> None:
    """Put the seq of this thread's last write in the response: a client that sends it back
    reads that write on any worker or replica. Call it in the write's thread, after the write."""
    response.headers[SEQ_HEADER] = str(service.written_seq())


async def max_batch(service: ServiceDep) -> int:
    return service.settings.max_batch


MaxBatch = Annotated[int, Depends(max_batch)]


def check_batch(entries: int, limit: int, field: str) -> None:
    if entries > limit:
        raise TooManyEntries(field, entries, limit)


Responses = dict[int | str, dict[str, Any]]
"""Error responses a route documents in the OpenAPI document, beside its own."""

KEYED: Responses = {
    401: {"model": s.ErrorOut},
    413: {"model": s.ErrorOut},
    503: {"model": s.ErrorOut},
}
ADMIN: Responses = {403: {"model": s.ErrorOut}}
NOT_FOUND: Responses = {404: {"model": s.ErrorOut}}
CONFLICT: Responses = {409: {"model": s.ErrorOut}}
REFUSED: Responses = {422: {"model": s.ErrorOut}}

StrictJSONRoute = strict_json_route(lambda request: service_of(request).settings.max_json_values)


def keyed_router() -> APIRouter:
    """A router whose routes need a key and parse JSON bodies strictly (see `edge`)."""
    return APIRouter(
        dependencies=[Depends(require_key), Depends(log_position)],
        responses=KEYED,
        route_class=StrictJSONRoute,
    )


def admin_router() -> APIRouter:
    """A router whose routes need an admin key."""
    return APIRouter(
        dependencies=[Depends(require_admin)],
        responses={**KEYED, **ADMIN},
        route_class=StrictJSONRoute,
    )
