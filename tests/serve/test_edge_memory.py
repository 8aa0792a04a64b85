"""Property (hypothesis): no request body of up to twice the limit, in any transfer encoding, with
or without a key, to any route, grows the server's memory by 64 MiB or more, or gets a 5xx.

The server is `warmstart serve` in its own process, with its default limits (8 MiB bodies). Its
peak resident memory is reset before each request (`/proc/PID/clear_refs`, "5") and read after
it (`VmHWM`), so a spike that is freed again still counts. The bodies are the expensive kinds:
many tiny JSON values (about 80 bytes of Python objects for 3 bytes of `{},`), deep nesting,
one string of 8 million characters with a single astral character (4 bytes a character in
Python), ids padded with spaces (stripping copies them), UTF-16, bytes that are not JSON, and
valid batches that are stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import rawhttp
from tests.serve.test_serve import ADMIN, KEY, free_port, serving_process

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/PID/clear_refs"
)

LIMIT = 4 * 1024 * 1024
GROWTH = 64 * 1024 * 1024
ROUTES = [
    "/v1/items",
    "/v1/users",
    "/v1/events",
    "/v1/recommendations",
    "/v1/admin/reload",
    "/v1/experiments",
    "/v1/no-such-route",
]
KEYS = {"none": None, "wrong": "not-a-key", "key": KEY, "admin": ADMIN}


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    folder = tmp_path_factory.mktemp("memory")
    port = free_port()
    env = {"WARMSTART_ADMIN_KEYS": ADMIN}
    with serving_process(model_dir, folder / "m.db", port, env=env) as proc:
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {KEY}"}
        for j in range(20):  # warm every path once, so lazy set-up is not counted
            httpx.post(f"{base}/v1/recommendations", json={"text": f"rocket {j}"}, headers=auth)
            httpx.post(
                f"{base}/v1/items",
                json={"items": [{"item_id": f"w{j}", "text": "galaxy orbit"}]},
                headers=auth,
            )
            httpx.post(f"{base}/v1/items", content=b"{" * 100, headers=auth)
        yield base, proc.pid


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _fill(prefix: bytes, unit: bytes, suffix: bytes, size: int) -> bytes:
    return prefix + unit * max(0, (size - len(prefix) - len(suffix)) // len(unit)) + suffix


def body_of(kind: str, size: int) -> bytes:
    """A body of about `size` bytes of one expensive kind."""
    if kind == "tiny-objects":
        return _fill(b'{"items": [', b"{},", b"{}]}", size)
    if kind == "tiny-arrays":
        return _fill(b'{"events": [', b"[[]],", b"[]]}", size)
    if kind == "numbers":
        return _fill(b'{"item_ids": [', b"1,", b"1]}", size)
    if kind == "deep":
        return _fill(b"", b"[", b"", size)
    if kind == "astral-text":
        return _fill('{"text": "\U0001f600'.encode(), b"a", b'"}', size)
    if kind == "padded-id":
        return _fill(
            '{"users": [{"user_id": " \U0001f600'.encode(), b" ", b'x", "text": "t"}]}', size
        )
    if kind == "long-keys":
        return _fill(b'{"users": [{"user_id": "u", "attributes": {"', b"k", b'": 1}}]}', size)
    if kind == "items":
        n = max(1, min(1000, size // 2000))
        text = "galaxy, orbit: rocket " * max(1, (size // n - 60) // 22)
        items = ",".join(f'{{"item_id": "m{j}-{size}", "text": "{text}"}}' for j in range(n))
        return f'{{"items": [{items}]}}'.encode()
    if kind == "astral-attributes":  # valid: 64 attributes a user, each one emoji + 899 letters
        value = "\U0001f600" + "a" * 899
        attributes = json.dumps({f"a{j}": value for j in range(64)}, ensure_ascii=False)
        n = max(1, min(1000, size // (len(attributes.encode()) + 40)))
        users = ",".join(
            f'{{"user_id": "au{j}-{size}", "attributes": {attributes}}}' for j in range(n)
        )
        return f'{{"users": [{users}]}}'.encode()
    if kind == "astral-items":  # valid: texts of up to 20,000 characters with one emoji each
        n = max(1, min(1000, size // 20_100))
        text = "\U0001f600" + "rocket " * max(1, min(2856, (size // n - 80) // 7))
        items = ",".join(f'{{"item_id": "ai{j}-{size}", "text": "{text}"}}' for j in range(n))
        return f'{{"items": [{items}]}}'.encode()
    if kind == "utf-16":
        return _fill('{"text": "'.encode("utf-16"), "a".encode("utf-16-le"), b"", size)
    if kind == "not-json":
        return _fill(b"", bytes(range(256)), b"", size)
    raise ValueError(kind)


KINDS = [
    "tiny-objects",
    "tiny-arrays",
    "numbers",
    "deep",
    "astral-text",
    "padded-id",
    "long-keys",
    "items",
    "astral-attributes",
    "astral-items",
    "utf-16",
    "not-json",
]


# Each kind just under the limit, with a key, to the route it is aimed at: what the parser sees.
WORST = {
    "tiny-objects": "/v1/items",
    "tiny-arrays": "/v1/events",
    "numbers": "/v1/recommendations",
    "deep": "/v1/items",
    "astral-text": "/v1/recommendations",
    "padded-id": "/v1/users",
    "long-keys": "/v1/users",
    "items": "/v1/items",
    "astral-attributes": "/v1/users",
    "astral-items": "/v1/items",
    "utf-16": "/v1/recommendations",
    "not-json": "/v1/users",
}


def _worst_cases(test):  # type: ignore[no-untyped-def]
    for kind, route in WORST.items():
        test = example(
            kind=kind, size=LIMIT - 4096, chunked=True, chunk=65536, key="key", route=route
        )(test)
    return test


@_worst_cases
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    kind=st.sampled_from(KINDS),
    size=st.one_of(
        st.integers(1024, 2 * LIMIT),
        st.sampled_from([LIMIT - 4096, LIMIT, LIMIT + 1, 2 * LIMIT]),
    ),
    chunked=st.booleans(),
    chunk=st.sampled_from([1024, 64 * 1024, 1024 * 1024]),
    key=st.sampled_from(list(KEYS)),
    route=st.sampled_from(ROUTES),
)
def test_no_body_grows_server_memory_by_64_mib(
    server: tuple[str, int], kind: str, size: int, chunked: bool, chunk: int, key: str, route: str
) -> None:
    base, pid = server
    body = body_of(kind, size)
    headers = {"Content-Type": "application/json"}
    if KEYS[key] is not None:
        headers["Authorization"] = f"Bearer {KEYS[key]}"
    request = rawhttp.head("POST", route, headers, chunked=chunked, length=len(body))
    pieces = rawhttp.chunks(body, chunk) if chunked else rawhttp.plain(body, chunk)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak := now
    before = _status(pid, "VmRSS")
    answer = rawhttp.exchange(base, request, pieces, timeout=120)
    peak = _status(pid, "VmHWM")
    label = f"{kind} {len(body)} bytes {'chunked' if chunked else 'length'} {key} {route}"
    assert 200 <= answer.status < 500, f"{label}: {answer.status} {answer.body[:300]!r}"
    assert peak - before < GROWTH, f"{label}: +{(peak - before) / 2**20:.1f} MiB"
    print(f"{label}: {answer.status}, +{(peak - before) / 2**20:.1f} MiB")
    assert os.path.exists(f"/proc/{pid}")
