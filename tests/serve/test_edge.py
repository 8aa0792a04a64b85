"""The service against hostile and careless clients (issue 16), on a real server on loopback.

Each test reproduces one way a client could make the service read, hold, store or log what it
should not, or answer 5xx: bodies without a key, bodies past the limit in any transfer encoding,
fields without bounds, values one database stores and the other refuses, lax types, ids that
hide characters, broken model folders, connections that never finish their headers, and a
model that is still loading. The store-facing ones run on SQLite and, where
WARMSTART_TEST_POSTGRES_URL is set (CI), on PostgreSQL: the same request gets the same answer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests import rawhttp
from tests.serve.test_serve import (
    ADMIN_AUTH,
    AUTH,
    KEY,
    free_port,
    serving,
    serving_url,
    start_server,
)
from tests.synthetic import Synthetic
from warmstart.models.hybrid import WarmStartRecommender
from warmstart.serve.app import ServeSettings, create_app
from warmstart.serve.store import Store

PG_URL = os.environ.get("WARMSTART_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"]
JSON = {"Content-Type": "application/json"}
LIMIT = 4 * 1024 * 1024  # the default body limit


def _fresh_postgres() -> str:
    import sqlalchemy as sa

    assert PG_URL is not None
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "DROP TABLE IF EXISTS items, users, events, meta, experiments, "
                "experiment_exposures CASCADE"
            )
        )
    engine.dispose()
    return PG_URL


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("set WARMSTART_TEST_POSTGRES_URL (.ci/postgres.sh starts a server)")
        return _fresh_postgres()
    return f"sqlite:///{tmp_path / 'edge.db'}"


@pytest.fixture()
def base(model_dir: Path, db: str) -> Iterator[str]:
    with serving_url(model_dir, db) as url:
        yield url


def post(base: str, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, headers={**AUTH, **(headers or {})}, timeout=30)


def stored_item(db: str, item_id: str) -> Any:
    with Store.open(db) as store:
        return store.get_item(item_id)


# ---- bodies: the key first, the limit while reading -------------------------------------------
def test_a_body_without_a_key_is_refused_before_it_is_read(base: str) -> None:
    """Finding: 48 MiB of chunked JSON was read and parsed before the 401.

    The body is paced (60 KB a millisecond at most): unpaced, loopback socket buffers took
    several MB before the client saw even an immediate answer. Paced, reading the body up to
    the limit before answering still shows as more than the limit sent."""
    for key in ({}, {"Authorization": "Bearer not-the-key"}):
        endless = (b"[" + b"{}," * 20_000 for _ in range(10_000))  # 600 MB if it were all read
        answer = rawhttp.exchange(
            base,
            rawhttp.head("POST", "/v1/items", {**JSON, **key}, chunked=True),
            rawhttp.chunks(endless),
            pause=0.001,
        )
        assert answer.status == 401
        assert answer.sent_at_answer < LIMIT, answer.sent_at_answer  # answered at the start
        assert answer.headers.get("connection") == "close" and answer.closed
    # A declared length alone is not read either, and malformed JSON without a key is a 401.
    answer = rawhttp.exchange(base, rawhttp.head("POST", "/v1/users", JSON, length=2 * LIMIT))
    assert answer.status == 401
    r = httpx.post(f"{base}/v1/items", content=b"{", headers=JSON)
    assert r.status_code == 401, r.text


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_is_refused_while_reading(base: str, db: str, chunked: bool) -> None:
    """Finding: a 9 MiB chunked item, sent with a key, was stored."""
    text = b"y" * (4 * LIMIT)
    body = b'{"items": [{"item_id": "huge", "text": "' + text + b'"}]}'
    pieces = rawhttp.chunks(body) if chunked else rawhttp.plain(body)
    request = rawhttp.head("POST", "/v1/items", {**AUTH, **JSON}, chunked=chunked, length=len(body))
    answer = rawhttp.exchange(base, request, pieces)
    assert answer.status == 413 and str(LIMIT).encode() in answer.body
    assert answer.sent_at_answer < len(body)  # answered before the body was all sent
    assert answer.closed
    assert stored_item(db, "huge") is None
    # A client that sends its whole body before reading (most do) reads the 413 too: the
    # server drops what follows the limit instead of resetting the connection.
    plain = httpx.post(f"{base}/v1/items", content=body, headers={**AUTH, **JSON}, timeout=30)
    assert plain.status_code == 413
    # Just under the limit is fine (the text limit then answers, with the field's name).
    small = b'{"items": [{"item_id": "ok", "text": "' + b"z" * 100 + b'"}]}'
    ok = rawhttp.exchange(
        base,
        rawhttp.head("POST", "/v1/items", {**AUTH, **JSON}, chunked=chunked, length=len(small)),
        rawhttp.chunks(small) if chunked else rawhttp.plain(small),
    )
    assert ok.status == 200, ok.body


def test_a_body_of_many_small_values_is_refused_before_parsing(base: str) -> None:
    """3 bytes of `{},` become about 80 bytes of Python objects: values are counted first."""
    r = post(base, "/v1/items", {"items": [{}] * 300_000})
    assert r.status_code == 413 and "JSON values" in r.text
    r = post(base, "/v1/events", {"events": [[[[[]]]]] * 100_000})
    assert r.status_code == 413
    # Texts full of commas and colons are not values: a full batch of them is accepted.
    text = "a, b: c, [d], {e}, " * 100
    items = [{"item_id": f"comma-{j}", "text": text} for j in range(1000)]
    assert post(base, "/v1/items", {"items": items}).status_code == 200


def test_a_body_sent_too_slowly_is_cut_off(model_dir: Path, tmp_path: Path) -> None:
    with serving_url(model_dir, tmp_path / "slow.db", body_timeout=1.0) as base:
        body = b'{"users": [{"user_id": "slow", "text": "' + b"x" * 1000 + b'"}]}'
        answer = rawhttp.exchange(
            base,
            rawhttp.head("POST", "/v1/users", {**AUTH, **JSON}, length=len(body)),
            rawhttp.plain(body, size=50),
            pause=0.1,
        )
        assert answer.status == 408 and answer.closed
        assert answer.seconds < 5


# ---- fields: bounded, the same on every database ----------------------------------------------
def _item(**fields: Any) -> dict[str, Any]:
    return {"items": [{"item_id": "x", "text": "words", **fields}]}


FIELD_CASES = [
    ("title of 100 kB", "/v1/items", _item(attributes={"title": "t" * 100_000}), "title"),
    ("65 attributes", "/v1/items", _item(attributes={f"a{j}": j for j in range(65)}), "attributes"),
    ("long attribute name", "/v1/items", _item(attributes={"k" * 65: 1}), "attributes"),
    ("empty attribute name", "/v1/items", _item(attributes={"": 1}), "attributes"),
    ("text of 20,001", "/v1/items", _item(text="w" * 20_001), "text"),
    ("NUL in a text", "/v1/items", _item(text="a\x00b"), "text"),
    ("NUL in an id", "/v1/items", {"items": [{"item_id": "a\x00b", "text": "w"}]}, "item_id"),
    ("NUL in a name", "/v1/items", _item(attributes={"a\x00": 1}), "attributes"),
    ("NUL in a value", "/v1/items", _item(attributes={"a": "b\x00"}), "attributes"),
    ("NUL in a profile", "/v1/users", {"users": [{"user_id": "u", "text": "\x00"}]}, "text"),
    ("NUL in a query", "/v1/recommendations", {"text": "\x00"}, "text"),
    (
        "NUL in an event id",
        "/v1/events",
        {"events": [{"event_id": "\x00", "user_id": "u", "item_id": "item-001", "type": "view"}]},
        "event_id",
    ),
    ("model path with NUL", "/v1/admin/reload", {"model": "a\x00b"}, "model"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_fields_are_bounded_and_checked_alike_on_every_database(
    base: str, db: str, path: str, body: Any, field: str
) -> None:
    """Findings: no bound on attributes; NUL and non-finite numbers were 500 on PostgreSQL."""
    r = post(base, path, body, ADMIN_AUTH if "admin" in path else None)
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json()["detail"]), r.text
    assert len(r.content) < 4096  # the input is not echoed back
    assert stored_item(db, "x") is None


def test_a_string_longer_than_any_field_is_refused_before_parsing(base: str, db: str) -> None:
    """An 8 MB string with one emoji would take 32 MB once parsed: it is not parsed."""
    for body in (
        _item(attributes={"title": "t" * 1_000_000}),
        _item(text="\U0001f600" + "a" * 2**20),
    ):
        r = post(base, "/v1/items", body)
        assert r.status_code == 413 and "no field takes" in r.text, r.text
    assert stored_item(db, "x") is None


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused_on_every_database(base: str, db: str, number: str) -> None:
    raw = f'{{"items": [{{"item_id": "x", "text": "w", "attributes": {{"n": {number}}}}}]}}'
    r = httpx.post(f"{base}/v1/items", content=raw.encode(), headers={**AUTH, **JSON})
    assert r.status_code == 422, r.text
    assert stored_item(db, "x") is None


def test_lone_surrogates_are_refused(base: str) -> None:
    raw = b'{"users": [{"user_id": "u", "text": "a\\ud800b"}]}'
    r = httpx.post(f"{base}/v1/users", content=raw, headers={**AUTH, **JSON})
    assert r.status_code == 422, r.text


def test_explanations_are_bounded_whatever_the_titles(base: str, data: Synthetic) -> None:
    """Finding: an item with a 1 MB title and one click made a k=100 list 190 MB."""
    items = [
        {
            "item_id": f"long-{j}",
            "text": data.group_text(0, 8, seed=j),
            "attributes": {"title": "T" * 1000},
        }
        for j in range(5)
    ]
    assert post(base, "/v1/items", {"items": items}).status_code == 200
    events = [{"user_id": "fan", "item_id": f"long-{j}", "type": "click"} for j in range(5)]
    assert post(base, "/v1/events", {"events": events}).status_code == 200
    r = httpx.get(f"{base}/v1/users/fan/recommendations?k=100", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    titles = [
        n["title"] for rec in body["recommendations"] for n in rec["explanation"]["neighbours"]
    ]
    assert titles and max(len(t) for t in titles) <= 80
    assert all(len(rec["explanation"]["summary"]) <= 400 for rec in body["recommendations"])
    assert len(r.content) < 1500 * len(body["recommendations"])


def test_the_text_cache_is_bounded_in_bytes(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    """Finding: the cache was bounded by count only, and kept every text it was given."""
    with serving(model_dir, tmp_path / "cache.db", text_cache_bytes=2**20) as c:
        for j in range(800):
            text = f"{j} " + data.group_text(j % 3, 8, seed=j) + " é" * 9000
            r = c.post("/v1/recommendations", headers=AUTH, json={"text": text, "k": 1})
            assert r.status_code == 200
        metrics = c.get("/metrics", headers=AUTH).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("warmstart_text_cache")
    }
    assert 0 < values["warmstart_text_cache_bytes"] <= 2**20
    assert 100 < values["warmstart_text_cache_entries"] < 800


# ---- logs ---------------------------------------------------------------------------------------
@pytest.fixture()
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """Everything logged from here on, as text (uvicorn's loggers do not propagate to root)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="warmstart")
    extra = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for logger in extra:
        logger.addHandler(caplog.handler)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    try:
        yield lambda: "\n".join(formatter.format(r) for r in caplog.records)
    finally:
        for logger in extra:
            logger.removeHandler(caplog.handler)


def test_database_errors_are_logged_by_type_and_route_never_with_text(
    base: str, db: str, logs: Callable[[], str]
) -> None:
    """Finding: database errors logged SQLAlchemy's parameter dump and PostgreSQL's context."""
    import sqlalchemy as sa

    url = db.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE users"))
    engine.dispose()
    secret = "my-secret-self-description-4f9c"
    r = post(base, "/v1/users", {"users": [{"user_id": "victim", "text": secret}]})
    assert r.status_code == 503, r.text
    assert secret not in r.text
    logged = logs()
    assert "/v1/users" in logged and "503" in logged
    assert secret not in logged


def test_invalid_fields_are_logged_by_name_never_with_text(
    base: str, logs: Callable[[], str]
) -> None:
    secret = "hidden-attribute-name-\u202e-7d1a"
    r = post(base, "/v1/users", {"users": [{"user_id": "u", "attributes": {secret: 1}}]})
    assert r.status_code == 422
    logged = logs()
    assert "/v1/users" in logged and "attributes" in logged
    assert "hidden-attribute-name" not in logged


# ---- strict types -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"text": "space", "k": True},
        {"text": "space", "k": 5.0},
        {"text": "space", "explain": 0},
        {"text": "space", "exclude_seen": "yes"},
    ],
    ids=["k-true", "k-float", "explain-0", "exclude-seen-string"],
)
def test_types_are_strict(base: str, body: dict[str, Any]) -> None:
    """Finding: `"k": true` was taken as k=1 and `"explain": 0` as false."""
    r = post(base, "/v1/recommendations", body)
    assert r.status_code == 422, r.text
    assert next(iter(set(body) - {"text"})) in r.text


def test_bodies_must_be_utf8(base: str) -> None:
    """Finding: a UTF-16 body got 200, though the README promises 400."""
    doc = json.dumps({"text": "space rocket", "k": 3})
    for raw in (
        doc.encode("utf-16"),
        doc.encode("utf-16-le"),
        doc.encode("utf-32"),
        b'{"text": "\xff\xfe"}',
    ):
        r = httpx.post(f"{base}/v1/recommendations", content=raw, headers={**AUTH, **JSON})
        assert r.status_code == 400 and "UTF-8" in r.text, (raw[:8], r.text)
    declared = {**AUTH, "Content-Type": "application/json; charset=utf-16"}
    r = httpx.post(f"{base}/v1/recommendations", content=doc.encode("utf-16"), headers=declared)
    assert r.status_code == 400
    r = httpx.post(
        f"{base}/v1/recommendations",
        content=b"\xef\xbb\xbf" + doc.encode(),
        headers={**AUTH, **JSON},
    )
    assert r.status_code == 200, r.text  # a UTF-8 byte order mark is allowed (RFC 8259)


# ---- ids ----------------------------------------------------------------------------------------
HIDDEN = ["\u202e", "\u200b", "\u2028", "\u2066", "\ufeff", "\x7f", "\x85", "\x1b", "\t"]


@pytest.mark.parametrize("char", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_ids_hold_printable_characters_only(base: str, db: str, char: str) -> None:
    """Finding: ids could hold bidi overrides, zero-width and control characters."""
    item_id = f"spoof{char}ed"
    r = post(base, "/v1/items", {"items": [{"item_id": item_id, "text": "words"}]})
    assert r.status_code == 422 and "item_id" in r.text and f"U+{ord(char):04X}" in r.text
    assert stored_item(db, item_id) is None
    r = post(base, "/v1/users", {"users": [{"user_id": "u", "attributes": {f"k{char}": 1}}]})
    assert r.status_code == 422
    r = httpx.get(f"{base}/v1/users/{quote(f'a{char}b')}/recommendations", headers=AUTH)
    assert r.status_code == 422 and "user_id" in r.text


# ---- broken model folders ------------------------------------------------------------------------
def _edit_json(name: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return apply


def _edit_state(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        with np.load(folder / "state.npz") as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        np.savez(folder / "state.npz", **arrays)  # type: ignore[arg-type]

    return apply


def _truncate(name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return apply


def _nan(arrays: dict[str, np.ndarray]) -> None:
    arrays["item_vectors"] = arrays["item_vectors"].copy()
    arrays["item_vectors"][0, 0] = np.nan


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "model.json not JSON": (lambda f: (f / "model.json").write_text("{"), "model.json"),
    "model.json a list": (lambda f: (f / "model.json").write_text("[]"), "model.json"),
    "config a list": (_edit_json("model.json", lambda m: {**m, "config": []}), "config"),
    "config with an unknown field": (
        _edit_json("model.json", lambda m: {**m, "config": {**m["config"], "colour": 1}}),
        "colour",
    ),
    "config of the wrong type": (
        _edit_json("model.json", lambda m: {**m, "config": {**m["config"], "encoder": 5}}),
        "encoder",
    ),
    "unknown encoder": (
        _edit_json("model.json", lambda m: {**m, "config": {**m["config"], "encoder": "nope"}}),
        "nope",
    ),
    "another model kind": (
        _edit_json("model.json", lambda m: {**m, "model": "popularity"}),
        "popularity",
    ),
    "damaged arrays": (_truncate("state.npz"), "state.npz"),
    "missing arrays": (_edit_state(lambda a: a.pop("item_vectors")), "item_vectors"),
    "arrays of the wrong shape": (
        _edit_state(lambda a: a.update(user_cf=a["user_cf"][:5])),
        "user_cf",
    ),
    "NaN in the arrays": (_edit_state(_nan), "NaN"),
    "catalogue short of an item": (
        _edit_json("catalogue.json", lambda c: {**c, "item_ids": c["item_ids"][:-1]}),
        "catalogue",
    ),
    "catalogue a list": (lambda f: (f / "catalogue.json").write_text("[1]"), "catalogue"),
    "damaged catalogue arrays": (_truncate("catalogue.npz"), "catalogue"),
    "no state file": (lambda f: (f / "state.npz").unlink(), "state.npz"),
    "serve.json broken": (lambda f: (f / "serve.json").write_text('{"x": 1}'), "serve.json"),
}


@pytest.fixture(scope="module")
def broken_base(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving_url(model_dir, tmp_path_factory.mktemp("broken") / "b.db") as url:
        yield url


@pytest.mark.parametrize("breakage", list(BROKEN), ids=list(BROKEN))
def test_a_broken_model_folder_is_a_422_and_the_served_model_stays(
    broken_base: str, model_dir: Path, tmp_path: Path, data: Synthetic, breakage: str
) -> None:
    """Finding: reload and experiment arms answered 500 with a traceback for broken folders."""
    folder = tmp_path / "broken"
    shutil.copytree(model_dir, folder)
    breaker, clue = BROKEN[breakage]
    breaker(folder)
    before = httpx.get(f"{broken_base}/readyz").json()
    r = httpx.post(
        f"{broken_base}/v1/admin/reload",
        json={"model": str(folder)},
        headers=ADMIN_AUTH,
        timeout=60,
    )
    assert r.status_code == 422, r.text
    assert str(folder) in r.text and clue in r.text, r.text
    arms = [{"name": "a"}, {"name": "b", "model": str(folder)}]
    r = httpx.post(
        f"{broken_base}/v1/experiments",
        json={"experiment_id": f"e-{abs(hash(breakage))}", "arms": arms},
        headers=ADMIN_AUTH,
        timeout=60,
    )
    assert r.status_code == 422, r.text
    assert clue in r.text
    assert httpx.get(f"{broken_base}/readyz").json() == before
    r = httpx.get(f"{broken_base}/v1/users/{data.warm_users[0]}/recommendations", headers=AUTH)
    assert r.status_code == 200 and r.json()["experiment"] is None


def test_a_model_folder_does_not_choose_where_the_server_writes(
    broken_base: str, model_dir: Path, tmp_path: Path
) -> None:
    """Finding: a model folder could steer where the server writes (a stored cache folder)."""
    folder, target = tmp_path / "steer", tmp_path / "written-here"
    shutil.copytree(model_dir, folder)
    _edit_json("model.json", lambda m: {**m, "config": {**m["config"], "cache_dir": str(target)}})(
        folder
    )
    r = httpx.post(
        f"{broken_base}/v1/admin/reload",
        json={"model": str(folder)},
        headers=ADMIN_AUTH,
        timeout=60,
    )
    assert r.status_code == 422 and "cache_dir" in r.text
    assert not target.exists()


# ---- connections ----------------------------------------------------------------------------------
def test_connections_that_never_finish_their_headers_are_closed(
    model_dir: Path, tmp_path: Path
) -> None:
    """Finding: connections that never finished their request headers were held forever."""
    with serving_url(model_dir, tmp_path / "c.db", header_timeout=1.0) as base:
        host, port = rawhttp.address(base)
        start = time.monotonic()
        with socket.create_connection((host, port), timeout=10) as silent:
            assert silent.recv(1) == b""  # closed without a word: it never said anything
        with socket.create_connection((host, port), timeout=10) as partial:
            partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert partial.recv(4096).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 5
        # A header a byte at a time is cut off at the same deadline.
        trickle = rawhttp.exchange(
            base,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            (b"s" for _ in range(50)),
            pause=0.1,
        )
        assert trickle.status == 408 and trickle.closed and trickle.seconds < 3
        # A keep-alive connection's next request gets the same deadline.
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 408")


def test_headers_are_bounded_in_bytes(base: str) -> None:
    padding = {f"X-Pad-{j}": "p" * 1000 for j in range(100)}  # 100 KB of headers, in one read
    answer = rawhttp.exchange(base, rawhttp.head("GET", "/healthz", padding))
    assert answer.status == 431 and answer.closed
    # A header that never ends is cut off at the limit too, not kept growing.
    endless = (b"h" * 16384 for _ in range(100_000))  # 1.6 GB if it were all read
    answer = rawhttp.exchange(base, b"GET /healthz HTTP/1.1\r\nX-Endless: ", endless)
    assert answer.status == 431 and answer.sent_at_answer < 64 * 1024 * 1024
    assert httpx.get(f"{base}/healthz", headers={"X-Pad": "p" * 1000}).status_code == 200


def test_connections_beyond_the_cap_get_503(model_dir: Path, tmp_path: Path) -> None:
    def status_within(expected: int, seconds: float = 10.0) -> int:
        deadline = time.monotonic() + seconds
        while (status := httpx.get(f"{base}/healthz").status_code) != expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return status

    with serving_url(model_dir, tmp_path / "cap.db", max_connections=3) as base:
        host, port = rawhttp.address(base)
        held = [socket.create_connection((host, port), timeout=10) for _ in range(3)]
        try:
            assert status_within(503) == 503
        finally:
            for conn in held:
                conn.close()
        assert status_within(200) == 200


# ---- readiness --------------------------------------------------------------------------------------
class _SlowEncoder:
    """The hashing encoder, but its first call waits for `loaded` (as MiniLM's weights take
    about 15 s to load); counts its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.loaded = threading.Event()
        self.calls = 0

    def encode(self, texts: Any, *, batch_size: int = 64, show_progress: bool | None = None) -> Any:
        self.loaded.wait(60)
        self.calls += 1
        return self.inner.encode(texts, batch_size=batch_size, show_progress=show_progress)


def test_not_ready_until_the_encoder_is_loaded(
    model_dir: Path, tmp_path: Path, data: Synthetic
) -> None:
    """Finding: the encoder loaded on the first text request while /healthz was green."""
    from warmstart.models import Recommender

    model = Recommender.load(model_dir)
    assert isinstance(model, WarmStartRecommender)
    slow = _SlowEncoder(model.encoder)
    model.set_encoder(slow)
    cfg = ServeSettings(
        model_dir=model_dir,
        db_url=f"sqlite:///{tmp_path / 'r.db'}",
        api_keys=(KEY,),  # type: ignore[arg-type]
    )
    server, base = start_server(create_app(cfg, model=model), cfg, ready=False)
    try:
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "ready": False}
        r = httpx.get(f"{base}/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(f"{base}/v1/recommendations", json={"text": "space"}, headers=AUTH)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert httpx.post(f"{base}/v1/recommendations", json={"text": "x"}).status_code == 401
        slow.loaded.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert slow.calls >= 1  # loaded (and used once) before ready
        assert httpx.get(f"{base}/readyz").json()["items"] == data.n_items
        r = httpx.post(
            f"{base}/v1/recommendations", json={"text": data.group_text(0)}, headers=AUTH
        )
        assert r.status_code == 200
    finally:
        server.should_exit = True
        server.thread.join(timeout=10)  # type: ignore[attr-defined]


def test_serve_exits_when_the_model_cannot_be_loaded(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad-encoder"
    shutil.copytree(model_dir, folder)
    _edit_json("model.json", lambda m: {**m, "config": {**m["config"], "encoder": "nope"}})(folder)
    env = {**os.environ, "WARMSTART_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "warmstart.cli.main", "serve", "--model", str(folder)]
    cmd += ["--db", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "nope" in done.stderr
