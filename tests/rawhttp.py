"""HTTP/1.1 by hand over a socket, for what ordinary clients will not send: bodies cut short or
chunked without end, headers a byte at a time, bodies that are not UTF-8.

`exchange` sends a request while reading on another thread, so the answer is caught as soon as
the server gives it, even when the server answers before the body is complete and then closes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int  # 0: no answer before the connection closed
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send
    sent_at_answer: int  # body bytes sent when the whole answer had arrived
    seconds: float  # from the first byte sent to the whole answer received
    closed: bool  # the server closed the connection after answering
    extra: dict[str, float] = field(default_factory=dict)

    def json(self) -> object:
        import json

        return json.loads(self.body)


def address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname or "127.0.0.1", int(parts.port or 80)


def head(
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
    chunked: bool = False,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunks(body: bytes | Iterable[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """A body in chunked transfer encoding, `size` bytes a chunk."""
    parts = (
        [body[i : i + size] for i in range(0, len(body), size)] if isinstance(body, bytes) else body
    )
    for part in parts:
        if part:
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def plain(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def exchange(
    base: str,
    request_head: bytes,
    body: Iterable[bytes] = (),
    *,
    timeout: float = 30.0,
    pause: float = 0.0,
) -> Answer:
    """Send a request head and body pieces (stopping when the server answers or resets) and
    return the answer."""
    sock = socket.create_connection(address(base), timeout=timeout)
    received = bytearray()
    done = threading.Event()
    sent = 0
    sent_at_answer = -1

    def read() -> None:
        nonlocal sent_at_answer
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received.extend(data)
                if _complete(bytes(received)):
                    break
        except OSError:
            pass
        finally:
            sent_at_answer = sent
            done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.perf_counter()
    try:
        sock.sendall(request_head)
        for piece in body:
            if done.is_set():
                break
            sock.sendall(piece)
            sent += len(piece)
            if pause:
                time.sleep(pause)
    except OSError:
        pass  # the server answered and closed, or reset: read what it said
    done.wait(timeout)
    seconds = time.perf_counter() - start
    closed = False
    if done.is_set():
        sock.settimeout(2.0)
        try:
            closed = sock.recv(1) == b""
        except OSError:
            closed = True
    sock.close()
    status, headers, content = _parse(bytes(received))
    return Answer(status, headers, content, sent, sent_at_answer, seconds, closed)


def _complete(raw: bytes) -> bool:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return False
    _, headers, _ = _parse(raw[: end + 4])
    return len(raw) - end - 4 >= int(headers.get("content-length", "0"))


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return 0, {}, b""
    lines = raw[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, raw[end + 4 :]
