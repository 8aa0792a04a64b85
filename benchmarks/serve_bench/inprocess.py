"""`Engine` calls timed piece by piece in one process, with no HTTP: where a request's time goes."""

from __future__ import annotations

import cProfile
import io
import itertools
import os
import pstats
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import code_version

from serve_bench.catalogue import pseudo_words
from serve_bench.routes import profile_texts


def add_newcomers(engine: Any, rng: np.random.Generator, n: int = 50) -> list[str]:
    """`n` text-only users (`text-0`, ...) and `n` few-shot users (`few-0`, ..., 3 clicks each
    on items with 5 or more interactions) on `engine`; returns `n` visitor texts, encoded once
    so that timed calls find them cached, as the load test's do."""
    from warmstart.serve.store import EventRecord, UserRecord

    cat = engine.model.catalogue
    texts = profile_texts(rng, cat.item_text, n)
    engine.upsert_users([UserRecord(f"text-{i}", t, {}) for i, t in enumerate(texts)])
    ids = cat.item_ids.to_list()
    common = [str(ids[i]) for i in np.flatnonzero(cat.item_counts() >= 5)]
    engine.add_events(
        EventRecord(f"few-{i}", str(item), "click", None, None, None)
        for i in range(n)
        for item in rng.choice(common, size=3, replace=False)
    )
    for text in texts:
        engine.recommend_profile(text, {}, [], explain=True)
    return texts


def timed(fn: Callable[[], Any], n: int, budget_s: float = 8.0) -> dict[str, float]:
    """p50/p99/mean wall milliseconds of up to n calls (fewer, at least 10, past `budget_s`)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < n and (len(times) < 10 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "calls": len(times),
    }


def top_functions(fn: Callable[[], Any], n: int, lines: int = 18, budget_s: float = 15.0) -> str:
    """cProfile of up to n calls of fn (fewer past `budget_s`), the top functions by own time."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    calls = 0
    prof.enable()
    while calls < n and (calls < 5 or time.perf_counter() - start < budget_s):
        fn()
        calls += 1
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    body = text[text.find("   ncalls") :] if "   ncalls" in text else text
    return f"{calls} calls\n{body}"


def inprocess_profile(
    model_dir: Path, tmp: Path, reps: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Time `Engine` calls on the same model in this process, piece by piece, with no HTTP.

    BLAS runs on one thread, as `warmstart serve` sets it (requests are its parallelism)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    os.environ["WARMSTART_CACHE_DIR"] = str(tmp / "inprocess-cache")
    threadpool_limits(1)
    import scipy.sparse as sp

    from warmstart.models import Recommender
    from warmstart.models.base import ProfileQuery
    from warmstart.models.cf import fold_in
    from warmstart.models.hybrid import WarmStartRecommender
    from warmstart.serve.engine import Engine
    from warmstart.serve.store import ItemRecord

    t0 = time.perf_counter()
    model = Recommender.load(model_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert isinstance(model, WarmStartRecommender)
    engine = Engine(model)
    index_s = time.perf_counter() - t0
    m = engine.model
    assert isinstance(m, WarmStartRecommender)  # the model above; the engine types it as a protocol
    cat = m.catalogue
    counts = cat.user_counts()
    warm = [str(u) for u in np.asarray(cat.user_ids.to_list(), dtype=object)[counts > 0]]
    texts = add_newcomers(engine, rng)
    users = itertools.cycle(warm[:: max(1, len(warm) // 500)])
    text_users = itertools.cycle([f"text-{i}" for i in range(50)])
    few_users = itertools.cycle([f"few-{i}" for i in range(50)])
    text_cycle = itertools.cycle(texts)
    out: dict[str, Any] = {
        "code": code_version(),
        "threadpools": [
            {k: i.get(k) for k in ("user_api", "internal_api", "num_threads")}
            for i in threadpool_info()
        ],
        "model_load_s": load_s,
        "engine_build_s": index_s,
        "index": "hnsw" if not engine.index.is_exact else "exact",
        "items": engine.n_items,
        "item_vector_dim": int(m.item_vectors.shape[1]),
    }

    one_row = sp.csr_matrix(
        (np.full(3, 3.0, np.float32), ([0, 0, 0], [0, 1, 2])), shape=(1, cat.n_items)
    )
    q = np.ascontiguousarray(m.item_vectors[0])

    def respond() -> Any:
        """The warm route as the app answers it: engine, response model, JSON."""
        from warmstart.serve.routes.recommendations import recommendations_out as _recommendations

        user = next(users)
        return _recommendations(user, engine.recommend_user(user, k=10)).model_dump_json()

    calls: dict[str, Callable[[], Any]] = {
        "warm engine.recommend_user explain": lambda: engine.recommend_user(next(users), k=10),
        "warm engine.recommend_user no explain": lambda: engine.recommend_user(
            next(users), k=10, explain=False
        ),
        "warm index.search only": lambda: engine.index.search(
            m.user_vectors[int(np.flatnonzero(counts > 0)[0])], 10
        ),
        "warm + response model + JSON": respond,
        "text-only engine.recommend_user explain": lambda: engine.recommend_user(
            next(text_users), k=10
        ),
        "text-only engine.recommend_user no explain": lambda: engine.recommend_user(
            next(text_users), k=10, explain=False
        ),
        "few-shot engine.recommend_user explain": lambda: engine.recommend_user(
            next(few_users), k=10
        ),
        "anonymous engine.recommend_profile explain": lambda: engine.recommend_profile(
            next(text_cycle), {}, [], k=10
        ),
        "anonymous engine.recommend_profile no explain": lambda: engine.recommend_profile(
            next(text_cycle), {}, [], k=10, explain=False
        ),
        "anonymous model.score_profiles only": lambda: m.score_profiles(
            [ProfileQuery(text=next(text_cycle), attribute_text=None, items=np.empty(0, np.int64))]
        ),
        "catalogue.item_counts() (once per explained item)": lambda: cat.item_counts(),
        "cf.fold_in, one row of 3 items over item_cf (p_cf of a profile)": lambda: fold_in(
            m.item_cf, one_row, m.config.cf.regularization
        ),
        "cf.fold_in, one row over item_embeddings (text profile, if its weight > 0)": lambda: (
            fold_in(m.item_embeddings, one_row, m.config.text_profile_regularization)
        ),
        "item_vectors @ one vector (scoring the whole catalogue)": lambda: m.item_vectors @ q,
        "model.encode one cached text": lambda: m.encode([next(text_cycle)]),
        "catalogue.user_counts() (once per user request)": lambda: cat.user_counts(),
    }
    out["timings"] = {}
    for name, fn in calls.items():
        try:
            out["timings"][name] = timed(fn, reps)
        except ImportError as exc:
            out["timings"][name] = {"skipped": str(exc)}
    out["cprofile_warm_explain"] = top_functions(
        lambda: engine.recommend_user(next(users), k=10), reps
    )
    out["cprofile_anonymous_explain"] = top_functions(
        lambda: engine.recommend_profile(next(text_cycle), {}, [], k=10), reps
    )
    adds = []
    for j in range(5):
        rec = ItemRecord(f"inproc-new-{j}", f"Limited edition {' '.join(pseudo_words(rng, 6))}", {})
        t0 = time.perf_counter()
        engine.upsert_items([rec])
        adds.append(1e3 * (time.perf_counter() - t0))
    out["engine.upsert_items one item ms"] = adds
    out["cprofile_upsert_item"] = top_functions(
        lambda: engine.upsert_items(
            [ItemRecord(f"inproc-{uuid.uuid4().hex}", " ".join(pseudo_words(rng, 8)), {})]
        ),
        3,
        12,
    )
    return out
