"""A/B tests: users hashed to arms, exposures counted per arm, clicks read from the events.

An arm is a model variant (`model`: another saved model folder, served beside the main one) or a
blend variant (`neighbour_weight`, `popularity_weight`, `popularity_fade`: how much a newcomer's
named items' neighbours and popularity count, and how fast the prior fades with their events). A user's arm is a hash of the experiment id and the user id, so it is the
same on every request, on every server, and after a restart, with no assignment table to keep.

One experiment runs at a time and applies to `GET /v1/users/{id}/recommendations`. Exposures
(lists served and items shown, per arm and user) are counted in memory and written to the store
every `flush_seconds` and at shutdown: a crash loses at most that much of the counts, never an
event. Clicks are `click` and `purchase` events after the experiment started, by users the arm
served.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from warmstart.serve.store import ExperimentRecord, Store

log = logging.getLogger(__name__)

CLICK_TYPES = ("click", "purchase")
BLEND_KEYS = ("neighbour_weight", "popularity_weight", "popularity_fade")


class ExperimentConflict(ValueError):
    """The experiment exists already, or another one is running."""


def assign(
    experiment_id: str, user_id: str, arms: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any]:
    """The user's arm: a uniform hash in [0, 1) cut by the arms' weights."""
    digest = hashlib.sha256(f"{experiment_id}\x00{user_id}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0**64
    total = sum(float(a["weight"]) for a in arms)
    edge = 0.0
    for arm in arms:
        edge += float(arm["weight"]) / total
        if x < edge:
            return arm
    return arms[-1]


def blend_of(arm: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(arm[k]) for k in BLEND_KEYS if arm.get(k) is not None}


class Experiments:
    """The experiments in the store, the running one, and exposure counts not yet written."""

    def __init__(self, store: Store, flush_seconds: float = 2.0) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        self._running = next((e for e in store.experiments() if e.status == "running"), None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> ExperimentRecord | None:
        return self._running

    def refresh(self) -> ExperimentRecord | None:
        """Re-read the running experiment from the store (another process may have started or
        stopped one); returns it."""
        running = next((e for e in self.store.experiments() if e.status == "running"), None)
        with self._lock:
            self._running = running
        return running

    def create(self, record: ExperimentRecord) -> ExperimentRecord:
        self.refresh()
        with self._lock:
            if self._running is not None:
                raise ExperimentConflict(
                    f"experiment {self._running.experiment_id!r} is running; stop it first"
                )
            if not self.store.create_experiment(record):
                raise ExperimentConflict(f"experiment {record.experiment_id!r} exists already")
            created = self.get(record.experiment_id)
            self._running = created
            return created

    def get(self, experiment_id: str) -> ExperimentRecord:
        for e in self.store.experiments():
            if e.experiment_id == experiment_id:
                return e
        raise KeyError(experiment_id)

    def stop(self, experiment_id: str) -> ExperimentRecord:
        self.get(experiment_id)  # KeyError when unknown
        self.flush()
        self.store.set_experiment_status(experiment_id, "stopped")
        with self._lock:
            if self._running is not None and self._running.experiment_id == experiment_id:
                self._running = None
        return self.get(experiment_id)

    def record(self, experiment_id: str, arm: str, user_id: str, shown: int) -> None:
        with self._lock:
            counts = self._pending[(experiment_id, arm, user_id)]
            counts[0] += 1
            counts[1] += shown

    def flush(self) -> None:
        with self._lock:
            rows = [(e, a, u, n, i) for (e, a, u), (n, i) in self._pending.items()]
            self._pending.clear()
        try:
            self.store.add_exposures(rows)
        except Exception as exc:  # kept for the next try; the log names the error, no ids or text
            log.error("could not write %d exposure counts: %s", len(rows), type(exc).__name__)
            with self._lock:  # put them back for the next try
                for e, a, u, n, i in rows:
                    counts = self._pending[(e, a, u)]
                    counts[0] += n
                    counts[1] += i

    def report(self, experiment_id: str) -> dict[str, Any]:
        """Per arm: users served, lists, items shown, clicks by those users, and click rate."""
        record = self.get(experiment_id)
        self.flush()
        arm_of: dict[str, str] = {}
        stats = {
            a["name"]: {"users": 0, "impressions": 0, "items_shown": 0, "clicks": 0}
            for a in record.arms
        }
        for arm, user, lists, shown in self.store.exposures(experiment_id):
            if arm not in stats:
                continue
            arm_of[user] = arm
            stats[arm]["users"] += 1
            stats[arm]["impressions"] += lists
            stats[arm]["items_shown"] += shown
        for event in self.store.events(since_seq=record.start_seq):
            served_by = arm_of.get(event.user_id)
            if served_by is not None and event.type in CLICK_TYPES:
                stats[served_by]["clicks"] += 1
        arms = []
        for a in record.arms:
            st = stats[a["name"]]
            rate = st["clicks"] / st["items_shown"] if st["items_shown"] else None
            arms.append({**a, **st, "click_rate": rate})
        return {
            "experiment_id": record.experiment_id,
            "status": record.status,
            "start_seq": record.start_seq,
            "arms": arms,
        }

    def start(self) -> None:
        """Write exposure counts in the background every `flush_seconds`."""

        def loop() -> None:
            while not self._stop.wait(self.flush_seconds):
                self.flush()

        self._thread = threading.Thread(target=loop, name="experiment-flush", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
