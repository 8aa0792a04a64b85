"""The engine's snapshots: reads never wait for a write, and never see half of one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.synthetic import Synthetic
from warmstart.models import Recommender
from warmstart.serve.engine import Engine, Ranked
from warmstart.serve.store import EventRecord, ItemRecord
from warmstart.text.core import TextEncoder

GATED = "gated item"


class _Gate:
    """Wraps an encoder: a call with a text starting with GATED waits until `release`."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.started, self.release = threading.Event(), threading.Event()

    def encode(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        if any(t.startswith(GATED) for t in texts):
            self.started.set()
            assert self.release.wait(60), "the test never released the gate"
        return self.inner.encode(texts, **kwargs)


def _gate(engine: Engine) -> _Gate:
    cache = engine.text_cache
    gate = _Gate(cache.disk or cache.encoder)
    cache.disk = cache.encoder = gate  # type: ignore[assignment]
    return gate


def _answers(e: Engine, data: Synthetic) -> list[tuple[str, list[Any], list[float]]]:
    """One answer per route family, as comparable tuples."""
    warm = data.warm_users_of(0)[0]
    answers: list[Ranked] = [
        e.recommend_user(str(warm), k=10, explain=False),
        e.recommend_user("clicker", k=10, explain=False),
        e.recommend_profile(data.group_text(1), None, [], k=10, explain=False),
        e.recommend_profile(None, None, [str(data.items_of(2, cold=False)[0])], k=10),
        e.similar_items(str(data.items_of(0, cold=False)[0]), k=10),
        e.recommend_user("nobody", k=10, explain=False),
    ]
    return [(r.route, r.item_ids, r.scores) for r in answers]


def _in_thread(call: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`call()` in another thread; fails (instead of hanging) if it has not returned in time."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"a read waited more than {timeout:.0f} s for a write"
    return out[0]


@pytest.mark.parametrize("exact_below", [20_000, 10], ids=["exact", "hnsw"])
def test_reads_never_wait_for_a_write_and_see_it_only_whole(
    model_dir: Path, data: Synthetic, exact_below: int
) -> None:
    e = Engine(Recommender.load(model_dir), exact_below=exact_below)
    clicks = [str(i) for i in data.items_of(1, cold=False)[:3]]
    e.add_events([EventRecord(user_id="clicker", item_id=i, type="click") for i in clicks])
    before = _answers(e, data)
    gate = _gate(e)
    text = f"{GATED} {data.group_text(1)}"
    writer = threading.Thread(
        target=e.upsert_items,
        args=([ItemRecord(item_id="fresh", text=text, attributes={})],),
        daemon=True,
    )
    writer.start()
    assert gate.started.wait(30)
    try:
        # The write holds the writers' lock and is stuck in the encoder: every read still
        # answers, from the snapshot before it.
        during = _in_thread(lambda: _answers(e, data))
        assert during == before
        assert not e.has_item("fresh")
    finally:
        gate.release.set()
        writer.join(30)
    assert e.has_item("fresh")
    assert "fresh" in e.recommend_profile(text, None, [], k=3).item_ids


@pytest.mark.parametrize("exact_below", [20_000, 10], ids=["exact", "hnsw"])
def test_reads_during_many_writes_match_the_same_writes_applied_alone(
    model_dir: Path, data: Synthetic, exact_below: int
) -> None:
    """Readers hammer the engine while items are added, edited and deleted: no read fails or
    returns an id the engine had not been asked to hold, and the engine ends exactly where
    one that applied the same writes with nobody reading does."""
    writes: list[Callable[[Engine], Any]] = []
    for j in range(24):
        group = j % 3
        records = [
            ItemRecord(
                item_id=f"n{j}-{r}",
                text=data.group_text(group, seed=100 + 7 * j + r),
                attributes={},
            )
            for r in range(1 + j % 3)
        ]
        writes.append(lambda e, rs=records: e.upsert_items(rs))
        if j % 5 == 4:
            gone = str(data.items_of(group, cold=False)[j])
            writes.append(lambda e, i=gone: e.delete_item(i))
            writes.append(lambda e, rs=records: e.upsert_items([replace(rs[0], text="edited")]))
    e = Engine(Recommender.load(model_dir), exact_below=exact_below)
    known = {str(i) for i in data.items["item_id"]}
    known |= {f"n{j}-{r}" for j in range(24) for r in range(3)}
    done = threading.Event()
    failures: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        try:
            while not done.is_set():
                for route, ids, scores in _answers(e, data):
                    assert set(ids) <= known, route
                    assert len(set(ids)) == len(ids) <= 10, route
                    assert scores == sorted(scores, reverse=True), route
                    reads[0] += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for write in writes:
            write(e)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[0]
    assert reads[0] > 0
    alone = Engine(Recommender.load(model_dir), exact_below=exact_below)
    for write in writes:
        write(alone)
    assert _answers(e, data) == _answers(alone, data)


@pytest.mark.parametrize("exact_below", [20_000, 10], ids=["exact", "hnsw"])
def test_concurrent_reads_answer_as_serial_ones(
    model_dir: Path, data: Synthetic, exact_below: int
) -> None:
    """Requests scored at once on several threads (fold-in, text, candidates, explanations)
    get exactly the answers they get one at a time."""
    e = Engine(Recommender.load(model_dir), exact_below=exact_below)
    clicks = [str(i) for i in data.items_of(1, cold=False)[:3]]
    e.add_events([EventRecord(user_id="clicker", item_id=i, type="click") for i in clicks])
    expected = _answers(e, data)
    explained = e.recommend_user("clicker", k=5).explanations
    results: list[Any] = []

    def reader() -> None:
        for _ in range(15):
            results.append((_answers(e, data), e.recommend_user("clicker", k=5).explanations))

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 60
    for answers, explanations in results:
        assert answers == expected
        assert explanations == explained


def test_the_served_model_maps_its_arrays_from_the_folder(model_dir: Path, tmp_path: Path) -> None:
    """Workers share one copy of the model's arrays: the page cache's, not one each."""
    from warmstart.serve.app import ServeSettings, create_app

    settings = ServeSettings(
        model_dir=model_dir,
        db_url=f"sqlite:///{tmp_path / 'm.db'}",
        api_keys=("k" * 12,),  # type: ignore[arg-type]
    )
    app = create_app(settings)
    service = app.state.service
    try:
        service.load()
        model = service.engine.model
        for name in model.saved_arrays:
            array = getattr(model, name)
            if isinstance(array, np.ndarray) and array.size > 1 and array.dtype != object:
                assert _mapped(array), f"{name} is a copy, not a map of state.npz"
    finally:
        service.store.close()


def _mapped(array: np.ndarray) -> bool:
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = getattr(base, "base", None)
    return False
