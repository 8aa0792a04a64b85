"""The service's front door: what every HTTP request meets before a route sees it.

`Edge`, a plain ASGI middleware, in the order a request meets it:
  1. the key, from the headers, before one byte of the body is read: 401 without one (only
     `/healthz`, `/readyz` and the page at `/` are public);
  2. readiness: 503 until the model, its indexes and the text encoder are loaded;
  3. the body, read here whatever the transfer encoding (Content-Length or chunked): 413 as soon
     as it passes `max_body_bytes`, 408 when it takes longer than `body_timeout`; a refused
     request's connection is closed, so the rest of its body is never read;
  4. an exception no handler took: a 500 whose log line names the route, the exception's type
     and where it was raised, never its message (a message may quote a profile's text).
Every request is counted and timed per route for Prometheus.

Routes then parse JSON with `strict_json_route`: RFC 8259 JSON in UTF-8 only (no NaN or
Infinity, no lone surrogates), and at most `max_values` JSON values, counted on the raw bytes
before parsing: a body of small objects costs about 80 bytes of memory per value once parsed,
so the byte limit alone would let 8 MiB of `{},{},...` cost over 200 MiB.

Starlette's own `RequestBodyLimitMiddleware` bounds size only; reading the body here also
bounds its time and closes the connection after a refusal.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import numpy as np
import orjson
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("warmstart.serve")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})


class Gate(Protocol):
    """What the edge asks of the service."""

    @property
    def ready(self) -> bool: ...

    def authorised(self, token: str) -> bool: ...


class RequestMetrics(Protocol):
    """Per-route request counts and latencies (the service's Prometheus metrics)."""

    def observe(self, route: str, method: str, status: int, seconds: float) -> None: ...


class _Refused(Exception):
    """The request is answered here, without reaching a route."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class _Disconnected(Exception):
    """The client went away while sending its body."""


def bearer_token(headers: Headers) -> str:
    """The token of `Authorization: Bearer TOKEN`, or "" when there is none."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Edge:
    """See the module docstring. One per app."""

    def __init__(
        self,
        app: ASGIApp,
        gate: Gate,
        metrics: RequestMetrics,
        max_body_bytes: int,
        body_timeout: float,
    ) -> None:
        self.app, self.gate, self.metrics = app, gate, metrics
        self.max_body_bytes, self.body_timeout = max_body_bytes, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        headers = Headers(scope=scope)
        try:
            has_body = self._check(scope, headers)
            if has_body:
                body = await self._read_body(receive)
                receive = _replay(body, receive)
            await self._call_app(scope, receive, send_status, lambda: status != 0)
        except _Refused as refusal:
            extra = dict(refusal.headers)
            if _may_have_body(headers):
                extra["Connection"] = "close"  # the unread rest of the body is never read
            await _send_json(send_status, refusal.status, {"detail": refusal.detail}, extra)
        except _Disconnected:
            status = 499  # nginx's code for "client closed the request"; nothing is sent
        finally:
            # The router puts the matched route into the scope (this same dict) on its way in.
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            self.metrics.observe(route, scope["method"], status or 500, time.perf_counter() - start)

    def _check(self, scope: Scope, headers: Headers) -> bool:
        """Key, readiness and declared length; whether a body is coming."""
        if scope["path"] not in PUBLIC_PATHS:
            if not self.gate.authorised(bearer_token(headers)):
                raise _Refused(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
            if not self.gate.ready:
                raise _Refused(
                    503, "not ready: the model is still loading (see /readyz)", {"Retry-After": "5"}
                )
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _Refused(400, "Content-Length: not a whole number of bytes")
            if int(length) > self.max_body_bytes:
                raise _Refused(413, self._too_large())
        return _may_have_body(headers)

    def _too_large(self) -> str:
        return f"request body over {self.max_body_bytes} bytes: send fewer entries per request"

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, refused at the first byte over the limit or past the deadline."""
        deadline = time.monotonic() + self.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise _Refused(
                    408, f"request body not received within {self.body_timeout:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(413, self._too_large())
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _call_app(
        self, scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]
    ) -> None:
        """The app; an exception that escaped every handler becomes a 500 and a clean log line."""
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            route = str(getattr(scope.get("route"), "path", scope["path"]))
            log.error(
                "%s %s failed (error %s): %s", scope["method"], route, error_id, describe(exc)
            )
            if not started():
                detail = f"internal error (logged as {error_id})"
                await _send_json(send, 500, {"detail": detail}, {})


def describe(exc: BaseException) -> str:
    """An exception's type and where it was raised, for logs: never its message or arguments,
    which may carry request text (a driver error quoting a parameter, a validator's input)."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)[-6:]
        where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames)
        parts.append(f"{type(current).__module__}.{type(current).__qualname__} at {where}")
        current = current.__cause__ or current.__context__
    return "; caused by ".join(parts)


def _may_have_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length != "0"
    return "chunked" in headers.get("transfer-encoding", "").lower()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body read already, then waits on the client (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, body: Any, headers: dict[str, str]) -> None:
    content = orjson.dumps(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content, "more_body": False})


# ---- JSON bodies ----------------------------------------------------------------------------
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


def json_values_bound(body: bytes) -> int:
    """At most how many values (objects, arrays, keys, strings, numbers) `body` parses into.

    Every value but the outermost comes right after a `[`, `{`, `,` or `:` (an object's keys
    after `{` or `,`, their values after `:`). Counted with strings included: an overcount
    when texts hold commas, but a count at C speed.
    """
    return sum(body.count(c) for c in (b",", b":", b"[", b"{")) + 1


def _exact_values_bound(body: bytes) -> int:
    """`json_values_bound` with the content of strings blanked out first."""
    return json_values_bound(_STRING.sub(b'""', body))


MAX_STRING_BYTES = 256 * 1024
"""No field takes a string this long: the longest (a text, 20,000 characters) is at most 240,000
bytes of JSON even with every character escaped as a surrogate pair."""


def longest_unquoted(body: bytes, block: int = 1 << 20) -> int:
    """The longest stretch of `body` without a `"`: at least the longest string in it.

    Counted in blocks with numpy, so a body full of quotes costs a block's positions at most.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    longest, last = 0, -1
    for start in range(0, data.size, block):
        quotes = np.flatnonzero(data[start : start + block] == 0x22) + start
        if quotes.size == 0:
            continue
        longest = max(longest, int(quotes[0]) - last - 1)
        if quotes.size > 1:
            longest = max(longest, int(np.diff(quotes).max()) - 1)
        last = int(quotes[-1])
    return max(longest, data.size - last - 1)


def parse_json(body: bytes, content_type: str | None, max_values: int) -> Any:
    """A request body as JSON: UTF-8 only (400 otherwise), at most `max_values` values, and no
    string longer than any field takes (413 otherwise, checked before parsing: an 8 MiB string
    with one emoji becomes 32 MiB in Python).

    A syntax error raises `json.JSONDecodeError` (orjson's is a subclass), which FastAPI turns
    into a 422 that gives the position.
    """
    charset = _CHARSET.search(content_type or "")
    if charset and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise HTTPException(400, f"body: sent as {charset.group(1)}; send JSON in UTF-8")
    if body[:3] == codecs.BOM_UTF8:
        body = body[3:]  # RFC 8259 lets a parser ignore it
    elif body[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\x00" in body[:4]:
        raise HTTPException(400, "body: looks like UTF-16 or UTF-32; send JSON in UTF-8")
    # The exact count only for bodies the fast overcount cannot clear.
    if json_values_bound(body) > max_values and _exact_values_bound(body) > max_values:
        raise HTTPException(
            413, f"body: more than {max_values} JSON values: send fewer entries per request"
        )
    if len(body) > MAX_STRING_BYTES and longest_unquoted(body) > MAX_STRING_BYTES:
        raise HTTPException(
            413,
            f"body: a string (or a stretch without quotes) over {MAX_STRING_BYTES} bytes; "
            "no field takes one that long",
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        _check_utf8(body)
        raise


def _check_utf8(body: bytes, block: int = 1 << 16) -> None:
    """400 naming the first byte that is not UTF-8; decoded in blocks, so no copy of the body."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(body), block):
        try:
            decoder.decode(body[start : start + block])
        except UnicodeDecodeError as exc:
            raise HTTPException(
                400, f"body: not valid UTF-8 at byte {start + exc.start}; send JSON in UTF-8"
            ) from None
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "body: ends inside a UTF-8 character") from None


def strict_json_route(max_values: int | Callable[[Request], int]) -> type[APIRoute]:
    """A route class whose requests parse JSON bodies with `parse_json`.

    `max_values` may be a function of the request: a router defined once, at import, then
    serves apps with different limits.
    """

    class StrictJSONRequest(Request):
        async def body(self) -> bytes:
            # Starlette joins the chunks it read, copying the edge's one chunk: this keeps it.
            if not hasattr(self, "_body"):
                chunks = [chunk async for chunk in self.stream() if chunk]
                self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return self._body

        async def json(self) -> Any:
            if not hasattr(self, "_json"):
                body = await self.body()
                limit = max_values if isinstance(max_values, int) else max_values(self)
                self._json = parse_json(body, self.headers.get("content-type"), limit)
            return self._json

    class StrictJSONRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def strict(request: Request) -> Response:
                return await handler(StrictJSONRequest(request.scope, request.receive))

            return strict

    return StrictJSONRoute
