"""The live model: a fitted warmstart model plus everything the service has learned since its fit.

The model's arrays are the state of the last fit; the engine adds what arrived over HTTP: new and
edited items (encoded and mapped into the factor space at once), deleted items, user profiles, and
events, which are folded into the user's profile at the next request. The store holds the same
facts durably; `Engine.restore` replays them, so a restart (or a crash) loses nothing.

Routing of a known user id (`recommend_user`), decided by the model (`Recommender.route_user`):
  - `warm`: interactions in the training data and no events since: the fitted vector, searched
    in the ANN index (the score is one dot product, so retrieval is exact up to the index).
  - `fold-in`: training interactions and events since: the whole history is folded into the
    factor space (the ALS update), with the user's text, scored over the catalogue.
  - `few-shot`: no training interactions, some events: the same, from those events and text.
  - `text-only`: no interactions at all, but a self-description or attributes: text alone.
  - `popular`: nothing known (an id the service has never seen): what most people pick.

Newcomers (fold-in, few-shot, text-only, anonymous) are scored over the whole catalogue while it
is small enough for exact search. Above `exact_below` items they are scored only on candidates:
the ANN neighbours of their scoring vector and of their text, their named items' strongest
co-occurrence neighbours (as many as a search fetches) and the most popular items. Their scores
are exactly those of the full computation: each term's mean and spread over the whole catalogue
come from the moments of the item vectors (`ServableModel.score_profile_parts`). At 100,000
items the full computation reads every item vector twice per request (about 50 ms).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from warmstart.data.templates import render_attributes, short_label, title_of
from warmstart.errors import UnknownIdError
from warmstart.index.ann import VectorIndex
from warmstart.index.exact import topk
from warmstart.models.base import (
    SERVE_FEW_SHOT,
    SERVE_FOLD_IN,
    SERVE_POPULAR,
    SERVE_TEXT_ONLY,
    SERVE_WARM,
    Explanation,
    ProfileQuery,
)
from warmstart.models.hybrid import ColdBlend
from warmstart.models.servable import ServableModel
from warmstart.serve.store import EventRecord, ItemRecord, Store, UserRecord
from warmstart.text.cache import MemoryCachedEncoder
from warmstart.text.core import TextEncoder

log = logging.getLogger(__name__)

ROUTES = (SERVE_WARM, SERVE_FOLD_IN, SERVE_FEW_SHOT, SERVE_TEXT_ONLY, SERVE_POPULAR, "anonymous")


# Newcomers above `exact_below` items: candidates fetched per source, and the HNSW search depth
# for them (benchmarks/candidate_recall.py measures what both cost and find).
CANDIDATES = 128
CANDIDATE_DEPTH = 128
POPULAR_KEPT = 1024  # the most popular live items each snapshot ranks once (MAX_K is 1,000)
INDEX_SLICE = 16  # items inserted into the ANN indexes per lock hold (see `_index_items`)


class NoTextError(ValueError):
    """An item whose text and attributes render to nothing; `index` is its place in the batch."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


ITEM_TEXT_CHARS = 2_000  # an item's text as the service shows it: enough to read, bounded


@dataclass(frozen=True)
class Ranked:
    """A ranked list: external item ids, scores, optional explanations, and how it was routed."""

    route: str
    item_ids: list[Any]
    scores: list[float]
    explanations: list[Explanation] | None = None
    titles: list[str] = field(default_factory=list)  # what a person reads, one per item


@dataclass(frozen=True)
class _User:
    """What the service knows about a user beyond the model's catalogue; replaced, never edited."""

    text: str | None = None
    attributes: Mapping[str, Any] | None = None
    events: Mapping[int, None] = field(default_factory=dict)  # internal ids, first event first


@dataclass(frozen=True)
class Snapshot:
    """Everything a read uses, published whole: a request takes the current one once and
    finishes on it, while a write builds the next one beside it.

    `model` is a copy of the served model that nothing writes after publication (the model's
    growth replaces arrays, see `Recommender.add_items`). Internal ids run below `n_items`;
    the shared id map and ANN indexes may already hold a later snapshot's items, so every key
    they return is checked against `live`.
    """

    model: ServableModel
    live: np.ndarray  # per internal id: recommendable (False: deleted)
    popular: tuple[np.ndarray, np.ndarray]  # the most popular live items and their popularity

    @property
    def n_items(self) -> int:
        return int(self.live.size)

    def is_live(self, keys: np.ndarray) -> np.ndarray:
        """Per key: a live item of this snapshot (keys outside it, and -1 padding, are not)."""
        keys = np.asarray(keys, dtype=np.int64)
        inside = (keys >= 0) & (keys < self.live.size)
        out = np.zeros(keys.shape, dtype=bool)
        out[inside] = self.live[keys[inside]]
        return out


def _snapshot(model: ServableModel, live: np.ndarray, moments: bool) -> Snapshot:
    """The next snapshot, with what its first reads would otherwise compute (while every other
    request waited for the GIL) computed now: the popular list, the item counts, the id array,
    and, where candidate scores are standardised by them (`moments`), the item moments."""
    live = live.copy()
    live.flags.writeable = False
    pop = model.popularity
    keys, top = topk(np.where(live, pop, -np.inf)[None, :], min(POPULAR_KEPT, live.size))
    cat = model.catalogue
    cat.item_counts()
    cat.item_ids.prepare()
    if moments:
        _ = model.item_moments().cov
    return Snapshot(model, live, (keys[0], top[0]))


def item_text(record: ItemRecord, template: str | None) -> str | None:
    """An item's text as the model reads it: its own text, else its attributes rendered."""
    text = record.text.strip() if record.text else None
    return text or render_attributes(template, record.attributes)


class Engine:
    """Serves one fitted `warmstart` (or `warmstart-ft`) model and applies updates to it.

    Reads never wait for writes: a request reads one immutable `Snapshot`; a write (one at a
    time) encodes and places its items on a copy of the model, then publishes the new snapshot
    with one assignment and updates the ANN indexes. Several requests score at once: numpy's
    matrix products and the index search release the GIL.
    """

    def __init__(
        self,
        model: ServableModel,
        *,
        exact_below: int = 20_000,
        blend: Mapping[str, float] | None = None,
        graph_dir: Path | None = None,
        text_cache_texts: int = 20_000,
        text_cache_bytes: int = 64 * 2**20,
        query_encoder: TextEncoder | None = None,
    ) -> None:
        if not isinstance(model, ServableModel):
            raise TypeError(
                f"the service needs a 'warmstart' or 'warmstart-ft' model, not {model.name!r}: "
                "other models cannot place new items or users by their text"
            )
        # Visitors' and users' texts are cached in memory only, and encoded by `query_encoder`
        # when given; items by the model's encoder, and also cached on disk (see the class).
        self._encoder = MemoryCachedEncoder(
            model.encoder,
            max_texts=text_cache_texts,
            max_bytes=text_cache_bytes,
            queries=query_encoder,
        )
        model.set_encoder(self._encoder)
        self._writes = threading.RLock()
        cat = model.catalogue
        # External id -> internal id, only ever added to: an id may point past the published
        # snapshot while a write is being applied (`Snapshot.is_live` tells).
        self._item_index: dict[str, int] = {str(x): i for i, x in enumerate(cat.item_ids.to_list())}
        self._user_index: dict[str, int] = {str(x): i for i, x in enumerate(cat.user_ids.to_list())}
        self._users: dict[str, _User] = {}  # each value replaced whole by a write
        self._exact_below = exact_below
        self._graph_dir = graph_dir  # where HNSW graphs are saved and found again (None: nowhere)
        # The service's own cold-start blend weights, where the operator overrides the model's.
        self.default_blend = dict(blend or {})
        self._snap = _snapshot(model, np.ones(cat.n_items, dtype=bool), moments=False)
        self._rebuild_indexes()

    @property
    def snapshot(self) -> Snapshot:
        """The state reads see now."""
        return self._snap

    @property
    def model(self) -> ServableModel:
        """The served model as of the current snapshot (never written after publication)."""
        return self._snap.model

    @property
    def text_cache(self) -> MemoryCachedEncoder:
        """The in-memory cache of visitors' and users' text vectors."""
        return self._encoder

    def check_servable(self) -> None:
        """Load the text encoder and try each kind of work once, so that a model folder broken
        in a way its arrays do not show (an encoder of another dimension than its embeddings, a
        text map that does not fit its factors) fails here, when it is loaded, and not on a
        user's request; and so that the first request does not pay for loading the encoder."""
        self._encoder.warm_up()
        self.model.check_servable(self._encoder.dim)

    # ---- indexes -------------------------------------------------------------------------
    def _rebuild_indexes(self) -> None:
        snap = self._snap
        m = snap.model
        keys = np.flatnonzero(snap.live)
        below, graphs = self._exact_below, self._graph_dir
        self.index = VectorIndex(m.item_vectors.shape[1], exact_below=below, graph_dir=graphs)
        self.similar_index = VectorIndex(m.item_cf.shape[1], exact_below=below, graph_dir=graphs)
        self.text_index = VectorIndex(
            m.item_embeddings.shape[1], exact_below=below, graph_dir=graphs
        )
        if keys.size:
            # Nothing reads these indexes yet: one batch each, so every graph is built in
            # parallel and saved whole, and the next start with the same catalogue loads it.
            self._index_items(m, keys, step=keys.size)
        if self._uses_moments(m):
            _ = m.item_moments().cov  # what candidate scores are standardised by: computed here

    def _uses_moments(self, m: ServableModel) -> bool:
        """Whether reads standardise candidate scores by the item moments."""
        return not self.index.is_exact or m.blends_warm_users

    def _index_items(self, m: ServableModel, keys: np.ndarray, step: int = INDEX_SLICE) -> None:
        """Upsert `keys` into the three indexes, `step` at a time: a search waits for at most
        one slice's insertion, not a whole batch's."""
        for start in range(0, keys.size, step):
            part = keys[start : start + step]
            self.index.add(part, m.item_vectors[part])
            self.similar_index.add(part, _unit(m.item_cf[part]))
            self.text_index.add(part, m.item_embeddings[part])

    # ---- lookups -------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Items that can be recommended (deleted ones excluded)."""
        return int(self._snap.live.sum())

    def item(self, item_id: str, snap: Snapshot | None = None) -> int:
        """Internal id of a live item; UnknownIdError otherwise."""
        i = self._item_index.get(item_id)
        if i is None or not (snap or self._snap).is_live(np.array([i]))[0]:
            raise UnknownIdError(f"unknown item id {item_id!r}")
        return i

    def item_info(self, item_id: str) -> tuple[str, str]:
        """(title, text cut to ITEM_TEXT_CHARS) of a live item; UnknownIdError otherwise."""
        snap = self._snap
        i = self.item(item_id, snap)
        cat = snap.model.catalogue
        text = cat.item_text[i] if i < len(cat.item_text) else ""
        if len(text) > ITEM_TEXT_CHARS:
            text = text[: ITEM_TEXT_CHARS - 3].rstrip() + "..."
        return short_label(cat.titles[i]), text

    def has_item(self, item_id: str) -> bool:
        i = self._item_index.get(item_id)
        return i is not None and bool(self._snap.is_live(np.array([i]))[0])

    def user_info(self, user_id: str) -> tuple[str | None, Mapping[str, Any], bool, int]:
        """(text, attributes, known to the model, interactions) of a user; UnknownIdError if none."""
        snap = self._snap
        u = self._user_index.get(user_id)
        state = self._users.get(user_id)
        if u is None and state is None:
            raise UnknownIdError(f"unknown user id {user_id!r}")
        history = self._history(snap, u, state)
        text = state.text if state else None
        if text is None and u is not None:
            text = snap.model.catalogue.user_text[u]
        attributes = dict(state.attributes or {}) if state else {}
        return text, attributes, u is not None, int(history.size)

    @staticmethod
    def _history(snap: Snapshot, u: int | None, state: _User | None) -> np.ndarray:
        """Training items and items of events since, without repeats, training first."""
        trained = snap.model.catalogue.seen[u].indices if u is not None else np.empty(0, np.int32)
        recent = list(state.events) if state and state.events else []
        if not recent:
            return np.asarray(trained, dtype=np.int64)
        extra = np.asarray(recent, dtype=np.int64)
        extra = extra[(extra < snap.n_items) & ~np.isin(extra, trained)]
        return np.concatenate([np.asarray(trained, dtype=np.int64), extra])

    # ---- updates -------------------------------------------------------------------------
    def check_items(self, records: Sequence[ItemRecord]) -> list[str]:
        """Each item's text as the model will read it; NoTextError names the first without any."""
        template = self.model.catalogue.item_template
        rendered = []
        for j, r in enumerate(records):
            text = item_text(r, template)
            if not text:
                raise NoTextError(
                    j, f"item {r.item_id!r} has no text, and its attributes render to none"
                )
            rendered.append(text)
        return rendered

    def upsert_items(
        self, records: Sequence[ItemRecord], rendered: Sequence[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """Create or edit items; returns (created ids, updated ids). Recommendable on return.

        `rendered`: what `check_items(records)` returned, when the caller has it already.
        """
        if rendered is None:
            rendered = self.check_items(records)
        given = self._stored_vectors(records, rendered)
        # Item vectors survive a restart exactly (disk cache), and those another process stored
        # with the item are used as they are.
        with self._writes, self._encoder.persisting(), self._encoder.supplied(given):
            snap = self._snap
            m = copy.copy(snap.model)
            pairs = list(zip(records, rendered, strict=True))
            new = [(r, t) for r, t in pairs if r.item_id not in self._item_index]
            old = [(r, t) for r, t in pairs if r.item_id in self._item_index]
            live = snap.live
            start = m.catalogue.n_items
            if new:
                m.add_items(
                    [r.item_id for r, _ in new],
                    texts=[t for _, t in new],
                    titles=[title_of(r.attributes, t) for r, t in new],
                )
                live = np.concatenate([live, np.ones(len(new), dtype=bool)])
                for j, (r, _) in enumerate(new):
                    self._item_index[r.item_id] = start + j
            changed = [
                (self._item_index[r.item_id], r, t)
                for r, t in old
                if m.catalogue.item_text[self._item_index[r.item_id]] != t
            ]
            revived = [self._item_index[r.item_id] for r, _ in old]
            revived = [i for i in revived if not snap.is_live(np.array([i]))[0]]
            if not (new or changed or revived):  # as held already (e.g. replayed from the log)
                return [], [r.item_id for r, _ in old]
            if changed:
                m.update_item_texts(
                    np.array([i for i, _, _ in changed]),
                    [t for _, _, t in changed],
                    [title_of(r.attributes, t) for _, r, t in changed],
                )
            touched = {*range(start, start + len(new)), *(i for i, _, _ in changed), *revived}
            keys = np.array(sorted(touched), dtype=np.int64)
            live = live.copy()
            live[keys] = True
            self._snap = _snapshot(m, live, self._uses_moments(m))
            self._index_items(m, keys)
            return [r.item_id for r, _ in new], [r.item_id for r, _ in old]

    @property
    def encoder_name(self) -> str:
        """The name of the encoder of this model's item texts (what a stored vector names)."""
        return self._encoder.name

    def item_vectors(self, records: Sequence[ItemRecord], rendered: Sequence[str]) -> np.ndarray:
        """Each record's item vector as this engine will hold it after `upsert_items`, for the
        store to keep beside the item: the held vector of an item whose text is unchanged (an
        edit of its attributes encodes nothing), a new encoding otherwise."""
        m = self._snap.model
        out = np.empty((len(rendered), self._encoder.dim), dtype=np.float32)
        fresh: list[int] = []
        for j, (r, text) in enumerate(zip(records, rendered, strict=True)):
            i = self._item_index.get(r.item_id)
            if i is not None and i < m.catalogue.n_items and m.catalogue.item_text[i] == text:
                out[j] = m.item_embeddings[i]
            else:
                fresh.append(j)
        if fresh:
            with self._encoder.persisting():
                out[fresh] = self._encoder.encode([rendered[j] for j in fresh], show_progress=False)
        return out

    def _stored_vectors(
        self, records: Sequence[ItemRecord], rendered: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Rendered text -> vector, for records whose stored vector this encoder made."""
        width = 4 * self._encoder.dim
        return {
            text: np.frombuffer(r.vector, dtype="<f4")
            for r, text in zip(records, rendered, strict=True)
            if r.vector is not None and r.encoder == self._encoder.name and len(r.vector) == width
        }

    def delete_item(self, item_id: str) -> bool:
        """Stop recommending an item; False if it is unknown or already deleted."""
        return self.delete_items([item_id]) == 1

    def delete_items(self, item_ids: Sequence[str]) -> int:
        """Stop recommending items, in one snapshot; returns how many were live."""
        with self._writes:
            snap = self._snap
            found = [self._item_index.get(x) for x in item_ids]
            keys = np.unique(np.array([i for i in found if i is not None], dtype=np.int64))
            keys = keys[snap.is_live(keys)]
            if keys.size == 0:
                return 0
            live = snap.live.copy()
            live[keys] = False
            self._snap = _snapshot(snap.model, live, self._uses_moments(snap.model))
            self.index.remove(keys)
            self.similar_index.remove(keys)
            self.text_index.remove(keys)
            return int(keys.size)

    def upsert_users(self, records: Sequence[UserRecord]) -> None:
        with self._writes:
            for r in records:
                state = self._users.get(r.user_id, _User())
                self._users[r.user_id] = replace(
                    state,
                    text=r.text.strip() if r.text and r.text.strip() else None,
                    attributes=dict(r.attributes),
                )

    def add_events(self, events: Iterable[EventRecord]) -> int:
        """Fold stored events into their users' histories; unknown items are skipped."""
        added: dict[str, dict[int, None]] = {}
        n = 0
        for e in events:
            i = self._item_index.get(e.item_id)
            if i is not None:
                added.setdefault(e.user_id, {})[i] = None
                n += 1
        with self._writes:
            for user_id, items in added.items():
                state = self._users.get(user_id, _User())
                self._users[user_id] = replace(state, events={**state.events, **items})
        return n

    def restore(self, store: Store, since_seq: int = 0) -> None:
        """Replay the store: items, deletions, users, and the events after `since_seq`.

        Events up to `since_seq` are already in the model's training data (`warmstart retrain`).
        """
        items = store.items(include_deleted=True)
        live = [r for r in items if not r.deleted]
        if live:
            self.upsert_items(live)
        self.delete_items([r.item_id for r in items if r.deleted])
        self.upsert_users(store.users())
        self.add_events(store.events(since_seq=since_seq))
        log.info(
            "restored %d items, %d users and events from %s",
            len(items),
            len(self._users),
            store.url,
        )

    # ---- recommendations -----------------------------------------------------------------
    def recommend_user(
        self,
        user_id: str,
        k: int = 10,
        exclude_seen: bool = True,
        explain: bool = True,
        blend: Mapping[str, float] | None = None,
    ) -> Ranked:
        """Top-k for a user id, routed by the model (`route_user`; the module doc lists routes).

        `blend` overrides the cold-start blend (`neighbour_weight`, `popularity_weight`,
        `popularity_fade`) for this request, as an experiment's arm does; warm users' scores do
        not use them.
        """
        snap = self._snap
        m = snap.model
        cold_blend = self._cold_blend(m, blend)
        u = self._user_index.get(user_id)
        state = self._users.get(user_id)
        history = self._history(snap, u, state)
        text = state.text if state else None
        attributes = state.attributes if state else None
        attribute_text = render_attributes(m.catalogue.user_template, attributes or {})
        if attribute_text is None and u is not None:
            attribute_text = m.catalogue.user_text[u]
        route = m.route_user(
            trained=u is not None and bool(m.catalogue.user_counts()[u] > 0),
            new_events=bool(state and state.events),
            history=int(history.size),
            described=bool(text or attribute_text),
        )
        if route == SERVE_WARM:
            assert u is not None
            keys, scores = self._warm_topk(snap, u, history, k, exclude_seen)
            return self._ranked(snap, route, keys, scores, history, None, None, explain)
        if route == SERVE_POPULAR:
            return self._popular(snap, k, explain)
        query = ProfileQuery(text=text, attribute_text=attribute_text, items=history)
        return self._profile_ranked(snap, route, query, k, exclude_seen, explain, cold_blend)

    def recommend_profile(
        self,
        text: str | None,
        attributes: Mapping[str, Any] | None,
        item_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        explain: bool = True,
    ) -> Ranked:
        """An anonymous visitor: what they typed, their attributes, and items they picked."""
        snap = self._snap
        m = snap.model
        cold_blend = self._cold_blend(m, None)
        items = np.unique(np.array([self.item(i, snap) for i in item_ids], dtype=np.int64))
        text = text.strip() if text and text.strip() else None
        attribute_text = render_attributes(m.catalogue.user_template, attributes or {})
        if not (text or attribute_text or items.size):
            return self._popular(snap, k, explain)
        query = ProfileQuery(text=text, attribute_text=attribute_text, items=items)
        return self._profile_ranked(snap, "anonymous", query, k, exclude_seen, explain, cold_blend)

    def similar_items(self, item_id: str, k: int = 10) -> Ranked:
        """Items placed nearest in the collaborative space (cosine), the item itself excluded."""
        snap = self._snap
        i = self.item(item_id, snap)
        query = _unit(snap.model.item_cf[[i]])
        keys, scores = _search(snap, self.similar_index, query[0], k, {i})
        return self._ranked(snap, "similar", keys, scores, np.empty(0, np.int64), None, None, False)

    def _cold_blend(self, m: ServableModel, overrides: Mapping[str, float] | None) -> ColdBlend:
        """The model's cold-user blend with the service's settings, then the request's, on top."""
        return m.cold_blend_.with_overrides({**self.default_blend, **(overrides or {})})

    def _profile_ranked(
        self,
        snap: Snapshot,
        route: str,
        query: ProfileQuery,
        k: int,
        exclude_seen: bool,
        explain: bool,
        blend: ColdBlend,
    ) -> Ranked:
        if self.index.is_exact:
            m = snap.model
            scores = m.score_profile_parts(m.profile_parts([query], blend))
            scores[:, ~snap.live] = -np.inf
            if exclude_seen and query.items.size:
                scores[0, query.items] = -np.inf
            keys, top = topk(scores, k, copy=False)
            keys, top = keys[0], top[0]
        else:
            keys, top = self._candidate_topk(snap, query, k, exclude_seen, blend)
        return self._ranked(
            snap, route, keys, top, query.items, query.attribute_text, query.text, explain
        )

    def _candidate_topk(
        self, snap: Snapshot, query: ProfileQuery, k: int, exclude_seen: bool, blend: ColdBlend
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of a newcomer among candidates (see the module doc)."""
        m = snap.model
        parts = m.profile_parts([query], blend)
        fetch = max(CANDIDATES, k)
        seen = set(query.items.tolist()) if exclude_seen else set()
        pools = [self.index.nearest_keys(parts.users[0], fetch + len(seen), CANDIDATE_DEPTH)]
        if parts.free.size:
            text = parts.text[0]
            pools.append(self.text_index.nearest_keys(text, fetch + len(seen), CANDIDATE_DEPTH))
        if parts.near is not None:
            pools.append(_strongest(parts.near, fetch + len(seen)))
        if blend.popularity_weight and not parts.described[0]:
            pools.append(snap.popular[0][:fetch])
        cand = np.unique(np.concatenate(pools).astype(np.int64))
        cand = cand[snap.is_live(cand)]
        if seen:
            cand = cand[~np.isin(cand, query.items)]
        if cand.size == 0:  # everything they could get, they have already seen
            return np.full(k, -1, dtype=np.int64), np.full(k, -np.inf, dtype=np.float32)
        scores = m.score_profile_parts(parts, cand)
        order, top = topk(scores, k, copy=False)
        keys = np.where(order[0] >= 0, cand[np.maximum(order[0], 0)], -1)
        return keys, top[0]

    def _warm_topk(
        self, snap: Snapshot, u: int, history: np.ndarray, k: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """A trained user's top-k: one inner-product search, or, where the model adds its
        history's neighbours and popularity, exact scores of the search's candidates, the items
        nearest their history and the most popular items."""
        m = snap.model
        seen = set(history.tolist()) if exclude_seen else set()
        if not m.blends_warm_users:
            return _search(snap, self.index, m.user_vectors[u], k, seen)
        near = m.history_neighbours(u) if m.warm_neighbour_weight_ else None
        if self.index.is_exact:
            cand = np.flatnonzero(snap.live)
        else:
            fetch = max(CANDIDATES, k) + len(seen)
            pools = [self.index.nearest_keys(m.user_vectors[u], fetch, CANDIDATE_DEPTH)]
            if near is not None:
                pools.append(_strongest(near, fetch))
            if m.warm_popularity_weight_:
                pools.append(snap.popular[0][:fetch])
            cand = np.unique(np.concatenate(pools).astype(np.int64))
            cand = cand[snap.is_live(cand)]
        if seen:
            cand = cand[~np.isin(cand, history)]
        if cand.size == 0:
            return np.full(k, -1, dtype=np.int64), np.full(k, -np.inf, dtype=np.float32)
        order, top = topk(m.score_warm_user(u, cand, near), k, copy=False)
        return np.where(order[0] >= 0, cand[np.maximum(order[0], 0)], -1), top[0]

    def _popular(self, snap: Snapshot, k: int, explain: bool) -> Ranked:
        keys, top = snap.popular[0][:k], snap.popular[1][:k]
        return self._ranked(
            snap, SERVE_POPULAR, keys, top, np.empty(0, np.int64), None, None, explain
        )

    @staticmethod
    def _ranked(
        snap: Snapshot,
        route: str,
        keys: np.ndarray,
        scores: np.ndarray,
        history: np.ndarray,
        user_text: str | None,
        free_text: str | None,
        explain: bool,
    ) -> Ranked:
        keep = (keys >= 0) & np.isfinite(scores)
        keys, scores = keys[keep], scores[keep]
        m = snap.model
        external = m.catalogue.item_ids.to_external(keys)
        item_ids = [x.item() if isinstance(x, np.generic) else x for x in external]
        explanations = None
        if explain:
            explanations = m.explain_many(keys, history, scores, user_text, free_text)
        titles = [short_label(m.catalogue.titles[int(key)]) for key in keys]
        return Ranked(route, item_ids, [float(s) for s in scores], explanations, titles)


def _search(
    snap: Snapshot, index: VectorIndex, query: np.ndarray, k: int, exclude: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one query among the snapshot's live items. The index may hold items a later
    snapshot added (or still hold ones it deleted): those are dropped, and the search is asked
    for more until k of this snapshot's remain or the index has no more."""
    fetch = k
    while True:
        keys, scores = index.search(query, fetch, exclude=[exclude] if exclude else None)
        keys, scores = keys[0], scores[0]
        ok = snap.is_live(keys)
        if ok.all() or fetch >= len(index):
            keys, scores = keys[ok][:k], scores[ok][:k]
            pad = k - keys.size
            if pad > 0:
                keys = np.concatenate([keys, np.full(pad, -1, dtype=np.int64)])
                scores = np.concatenate([scores, np.full(pad, -np.inf, dtype=np.float32)])
            return keys, scores
        fetch = min(2 * fetch + int((~ok).sum()), len(index))


def _strongest(row: sp.csr_matrix, count: int) -> np.ndarray:
    """The columns of a one-row sparse matrix's `count` largest values: a history's nearest
    items, as many as a search fetches (a long history reaches thousands, and every candidate
    costs a scored row)."""
    if row.nnz <= count:
        return np.asarray(row.indices, dtype=np.int64)
    return np.asarray(row.indices[np.argpartition(-row.data, count - 1)[:count]], dtype=np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)
