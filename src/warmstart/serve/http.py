"""The HTTP server under the app: uvicorn, with limits on what a connection may cost.

uvicorn bounds a connection's idle time between requests (keep-alive) but not the time or bytes
it may spend on a request's headers: a client that opens a connection and sends nothing, or a
header a byte at a time, holds it forever, and llhttp buffers a header of any length. Here each
request's headers must be complete within `header_timeout` seconds of the connection opening
or of the request's first byte (else 408 and the connection is closed), and within
`max_header_bytes` (else 431). Connections beyond `max_connections` get uvicorn's 503.

A connection closed while the client is still sending its body (a 413 at the limit, a 401
before the body is read) is closed the way nginx's `lingering_close` does it: the answer, then
a FIN, then what the client still sends is read and dropped for up to `LINGER_SECONDS`. Closing
at once would make the kernel answer the unread bytes with a reset, and a client that sends its
whole body before reading (most do) would see "connection reset" instead of the 413.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024  # read and dropped at most, then the connection is reset


class _HeadTooLarge(Exception):
    """Raised inside the parser's callbacks to stop it; uvicorn answers (see send_400_response)."""


class _LingeringClose:
    """The transport a request's cycle writes to: its `close` lingers (see the module doc)."""

    def __init__(self, protocol: _GuardedHttpTools) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close_lingering()


class _GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a byte budget for request headers,
    and a lingering close.

    The header budget is counted twice: on the parsed URL and headers (exact, for a head that
    arrives whole in one read), and on the raw bytes of reads that end inside a head (llhttp
    keeps an unfinished header in memory however long it grows).
    """

    header_timeout = 10.0
    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._header_bytes = 0
        self._head_size = 0
        self._received = False
        self._message_complete = True
        self._refusal: tuple[int, str] | None = None
        self._lingering = False
        self._lingered = 0

    # ---- connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # after the answer: read and drop, up to a point
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        self._received = True
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing() and not self._lingering:
            # Still inside a request's headers after this whole read, so it was all headers.
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"request headers over {self.max_header_bytes} bytes")

    def eof_received(self) -> None:
        if self._lingering:  # the client has sent all it will: nothing left to drop
            self.transport.close()

    def close_lingering(self) -> None:
        """Close; if the request's body is still arriving, answer's FIN first, then linger."""
        transport = self.transport
        if transport.is_closing():
            return
        if self._message_complete or self._lingering or not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        self._stop_header_timer()
        transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    # ---- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._message_complete = False
        if not self._in_headers:
            self._start_headers()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._stop_header_timer()
        super().on_headers_complete()
        if self.cycle is not None and not isinstance(self.cycle.transport, _LingeringClose):
            self.cycle.transport = _LingeringClose(self)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._message_complete = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # our own stop of the parser, not a malformed request
            self._refuse(*self._refusal)
        else:
            super().send_400_response(msg)

    # ---- header limits ------------------------------------------------------------------
    def _count(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self.max_header_bytes:
            self._refusal = (431, f"request headers over {self.max_header_bytes} bytes")
            raise _HeadTooLarge

    def _start_headers(self) -> None:
        self._in_headers, self._header_bytes = True, 0
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._received:
            self._refuse(408, f"request headers not received within {self.header_timeout:g} s")
        else:
            self.transport.close()  # nothing was ever sent: nobody to answer

    def _refuse(self, status: int, detail: str) -> None:
        self._stop_header_timer()
        body = json.dumps({"detail": detail}).encode()
        reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self._message_complete = False  # the rest of this request is never read: linger
        self.close_lingering()


def guarded_protocol(header_timeout: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class with these limits (uvicorn builds one instance per connection)."""
    return type(
        "GuardedHttpTools",
        (_GuardedHttpTools,),
        {"header_timeout": float(header_timeout), "max_header_bytes": int(max_header_bytes)},
    )


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout: float,
    max_header_bytes: int,
    max_connections: int,
    keep_alive_timeout: float = 5.0,
    log_level: str = "info",
) -> uvicorn.Config:
    """uvicorn's config for the service: httptools with the header guard, uvloop where present."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(header_timeout, max_header_bytes),
        limit_concurrency=max_connections,
        timeout_keep_alive=int(max(1, round(keep_alive_timeout))),
        log_level=log_level,
    )
