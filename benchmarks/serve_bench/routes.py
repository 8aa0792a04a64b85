"""What the load generator sends: one request mix per route, and the users, events and warmed
texts on the server that the mixes need."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from serve_bench.load import Req

ALL_ROUTES = (
    "healthz",
    "warm",
    "warm-noexplain",
    "text-only",
    "text-only-noexplain",
    "few-shot",
    "anonymous",
    "anonymous-noexplain",
    "anonymous-new-text",
    "mix",
)
# A realistic mix: mostly known users, then visitors with a query, newcomers with a profile
# text, and newcomers with a few clicks (shares of requests; texts already seen by the server).
MIX = {"warm": 0.5, "anonymous": 0.2, "text-only": 0.15, "few-shot": 0.15}


@dataclass
class Route:
    """A request mix: how to build n requests, the server route it hits, the `route` expected."""

    name: str
    make: Callable[[np.random.Generator, int], list[Req]]
    metric: tuple[str, str]  # (route label, method) in the server's latency histogram
    expect: str | None = None  # the response's "route" field


def profile_texts(rng: np.random.Generator, item_texts: Sequence[str], n: int) -> list[str]:
    """n distinct short self-descriptions made of words from the catalogue's item texts."""
    out: dict[str, None] = {}
    while len(out) < n:
        picks = rng.choice(len(item_texts), size=2, replace=False)
        words = [w for p in picks for w in re.findall(r"[A-Za-z]{3,}", item_texts[int(p)])]
        if len(words) < 4:
            continue
        chosen = rng.choice(words, size=min(len(words), int(rng.integers(5, 9))), replace=False)
        out["I am looking for " + " ".join(chosen).lower()] = None
    return list(out)


def get_json(client: Any, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
    """Status, decoded body and milliseconds of one setup request (not load: timed alone)."""
    t0 = time.perf_counter()
    r = client.request(method, path, json=body)
    ms = 1e3 * (time.perf_counter() - t0)
    return r.status_code, (r.json() if r.content else None), ms


def build_routes(
    client: Any, catalogue: Any, rng: np.random.Generator, pool: int
) -> tuple[dict[str, Route], dict[str, Any]]:
    """Create the text-only and few-shot users on the server, warm each pool entry once (the
    first request for a text pays its encoding), and return the request mixes."""
    counts = catalogue.user_counts()
    warm = [str(u) for u in np.asarray(catalogue.user_ids.to_list(), dtype=object)[counts > 0]]
    item_ids = [str(i) for i in catalogue.item_ids.to_list()]
    item_counts = catalogue.item_counts()
    common = [item_ids[i] for i in np.flatnonzero(item_counts >= 5)]
    texts = profile_texts(rng, catalogue.item_text, pool)
    setup: dict[str, Any] = {"warm_users": len(warm), "pool": pool}

    text_users = [f"bench-text-{i}" for i in range(pool)]
    users = [{"user_id": u, "text": t} for u, t in zip(text_users, texts, strict=True)]
    code, _, _ = get_json(client, "POST", "/v1/users", {"users": users})
    assert code == 200, code
    few_users = [f"bench-few-{i}" for i in range(pool)]
    events = [
        {"user_id": u, "item_id": str(item), "type": "click", "event_id": f"{u}-{j}"}
        for u in few_users
        for j, item in enumerate(rng.choice(common, size=3, replace=False))
    ]
    for start in range(0, len(events), 900):
        code, body, _ = get_json(
            client, "POST", "/v1/events", {"events": events[start : start + 900]}
        )
        assert code == 200, (code, body)

    def user_reqs(
        ids: Sequence[str], explain: bool
    ) -> Callable[[np.random.Generator, int], list[Req]]:
        tail = "" if explain else "&explain=false"
        paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=10{tail}" for u in ids]

        def make(r: np.random.Generator, n: int) -> list[Req]:
            return [("GET", paths[int(j)], None) for j in r.integers(len(paths), size=n)]

        return make

    def anon_reqs(explain: bool, fresh: bool) -> Callable[[np.random.Generator, int], list[Req]]:
        def make(r: np.random.Generator, n: int) -> list[Req]:
            out: list[Req] = []
            for j in r.integers(len(texts), size=n):
                text = texts[int(j)] + (f" {uuid.uuid4().hex[:10]}" if fresh else "")
                body = {"text": text, "k": 10, "explain": explain}
                out.append(("POST", "/v1/recommendations", json.dumps(body).encode()))
            return out

        return make

    users_metric = ("/v1/users/{user_id}/recommendations", "GET")
    anon_metric = ("/v1/recommendations", "POST")
    routes = {
        "healthz": Route(
            "healthz",
            lambda r, n: [("GET", "/healthz", None)] * n,
            ("/healthz", "GET"),
        ),
        "warm": Route("warm", user_reqs(warm, True), users_metric, "warm"),
        "warm-noexplain": Route("warm-noexplain", user_reqs(warm, False), users_metric, "warm"),
        "text-only": Route("text-only", user_reqs(text_users, True), users_metric, "text-only"),
        "text-only-noexplain": Route(
            "text-only-noexplain", user_reqs(text_users, False), users_metric, "text-only"
        ),
        "few-shot": Route("few-shot", user_reqs(few_users, True), users_metric, "few-shot"),
        "anonymous": Route("anonymous", anon_reqs(True, False), anon_metric, "anonymous"),
        "anonymous-noexplain": Route(
            "anonymous-noexplain", anon_reqs(False, False), anon_metric, "anonymous"
        ),
        "anonymous-new-text": Route(
            "anonymous-new-text", anon_reqs(False, True), anon_metric, "anonymous"
        ),
    }

    def mix(r: np.random.Generator, n: int) -> list[Req]:
        names = list(MIX)
        picks = r.choice(len(names), size=n, p=list(MIX.values()))
        pools = {
            name: iter(routes[name].make(r, int((picks == j).sum())))
            for j, name in enumerate(names)
        }
        return [next(pools[names[int(j)]]) for j in picks]

    routes["mix"] = Route("mix", mix, ("mix", ""))
    # First request per pool entry: text users and anonymous texts are encoded here (cold cache).
    first: dict[str, list[float]] = {"text-only": [], "few-shot": [], "anonymous": []}
    for u in text_users:
        code, body, ms = get_json(client, "GET", f"/v1/users/{u}/recommendations?k=10")
        assert code == 200 and body["route"] == "text-only", (code, body)
        first["text-only"].append(ms)
    for u in few_users:
        code, body, ms = get_json(client, "GET", f"/v1/users/{u}/recommendations?k=10")
        assert code == 200 and body["route"] == "few-shot", (code, body)
        first["few-shot"].append(ms)
    for t in texts:
        code, body, ms = get_json(client, "POST", "/v1/recommendations", {"text": t, "k": 10})
        assert code == 200 and body["route"] == "anonymous", (code, body)
        first["anonymous"].append(ms)
    code, body, _ = get_json(client, "GET", f"/v1/users/{warm[0]}/recommendations?k=10")
    assert code == 200 and body["route"] == "warm", (code, body)
    # The very first text request loads the encoder in the server: reported on its own.
    setup["first_text_request_ever_ms"] = first["text-only"].pop(0)
    setup["first_request_ms"] = {
        name: {
            "n": len(v),
            "p50": float(np.percentile(v, 50)),
            "p99": float(np.percentile(v, 99)),
            "max": float(np.max(v)),
        }
        for name, v in first.items()
    }
    return routes, setup


def route_checker(expect: str | None) -> Callable[[bytes], str | None] | None:
    """Spot-check (every 97th response) that the server routed the request as intended."""
    if expect is None:
        return None

    def check(body: bytes) -> str | None:
        got = json.loads(body).get("route")
        return None if got == expect else f"expected route {expect!r}, got {got!r}"

    return check
