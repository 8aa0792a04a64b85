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
the ANN neighbours of their scoring vector and of their text, their named items' co-occurrence
neighbours and the most popular items. Their scores are exactly those of the full computation:
each term's mean and spread over the whole catalogue come from the moments of the item vectors
(`ServableModel.score_profile_parts`). At 100,000 items the full computation reads
every item vector twice per request (about 50 ms).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.data.templates import render_attributes, title_of
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

log = logging.getLogger(__name__)

ROUTES = (SERVE_WARM, SERVE_FOLD_IN, SERVE_FEW_SHOT, SERVE_TEXT_ONLY, SERVE_POPULAR, "anonymous")


# Newcomers above `exact_below` items: candidates fetched per source, and the HNSW search depth
# for them (benchmarks/candidate_recall.py measures what both cost and find).
CANDIDATES = 128
CANDIDATE_DEPTH = 128


class NoTextError(ValueError):
    """An item whose text and attributes render to nothing; `index` is its place in the batch."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Ranked:
    """A ranked list: external item ids, scores, optional explanations, and how it was routed."""

    route: str
    item_ids: list[Any]
    scores: list[float]
    explanations: list[Explanation] | None = None


@dataclass
class _User:
    """What the service knows about a user beyond the model's catalogue."""

    text: str | None = None
    attributes: Mapping[str, Any] | None = None
    events: dict[int, None] | None = None  # internal item ids, in order of first event


def item_text(record: ItemRecord, template: str | None) -> str | None:
    """An item's text as the model reads it: its own text, else its attributes rendered."""
    text = record.text.strip() if record.text else None
    return text or render_attributes(template, record.attributes)


class Engine:
    """Serves one fitted `warmstart` (or `warmstart-ft`) model and applies updates to it.

    All methods take one lock: updates replace the model's arrays, and a request must not see
    half of an update. Numpy releases the GIL in the matrix products, so the lock costs little
    on a 2-core machine compared with the scoring itself.
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
    ) -> None:
        if not isinstance(model, ServableModel):
            raise TypeError(
                f"the service needs a 'warmstart' or 'warmstart-ft' model, not {model.name!r}: "
                "other models cannot place new items or users by their text"
            )
        # Visitors' and users' texts are cached in memory only; items also on disk (see the class).
        self._encoder = MemoryCachedEncoder(
            model.encoder, max_texts=text_cache_texts, max_bytes=text_cache_bytes
        )
        model.set_encoder(self._encoder)
        self.model = model
        self._lock = threading.RLock()
        cat = model.catalogue
        self._item_index: dict[str, int] = {str(x): i for i, x in enumerate(cat.item_ids.to_list())}
        self._user_index: dict[str, int] = {str(x): i for i, x in enumerate(cat.user_ids.to_list())}
        self._live = np.ones(cat.n_items, dtype=bool)
        # The most popular live items, kept until items change: (popularity array, keys, values)
        self._popular_held: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._users: dict[str, _User] = {}
        self._exact_below = exact_below
        self._graph_dir = graph_dir  # where HNSW graphs are saved and found again (None: nowhere)
        # The service's own cold-start blend weights, where the operator overrides the model's.
        self.default_blend = dict(blend or {})
        self._rebuild_indexes()

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
        m = self.model
        keys = np.flatnonzero(self._live)
        below, graphs = self._exact_below, self._graph_dir
        self.index = VectorIndex(m.item_vectors.shape[1], exact_below=below, graph_dir=graphs)
        self.similar_index = VectorIndex(m.item_cf.shape[1], exact_below=below, graph_dir=graphs)
        self.text_index = VectorIndex(
            m.item_embeddings.shape[1], exact_below=below, graph_dir=graphs
        )
        if keys.size:
            self.index.add(keys, m.item_vectors[keys])
            self.similar_index.add(keys, _unit(m.item_cf[keys]))
            self.text_index.add(keys, m.item_embeddings[keys])
        if not self.index.is_exact:
            m.item_moments()  # what candidate scores are standardised by: computed once, here

    def _index_items(self, keys: np.ndarray) -> None:
        m = self.model
        self.index.add(keys, m.item_vectors[keys])
        self.similar_index.add(keys, _unit(m.item_cf[keys]))
        self.text_index.add(keys, m.item_embeddings[keys])

    # ---- lookups -------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Items that can be recommended (deleted ones excluded)."""
        return int(self._live.sum())

    def item(self, item_id: str) -> int:
        """Internal id of a live item; UnknownIdError otherwise."""
        i = self._item_index.get(item_id)
        if i is None or not self._live[i]:
            raise UnknownIdError(f"unknown item id {item_id!r}")
        return i

    def has_item(self, item_id: str) -> bool:
        i = self._item_index.get(item_id)
        return i is not None and bool(self._live[i])

    def user_info(self, user_id: str) -> tuple[str | None, Mapping[str, Any], bool, int]:
        """(text, attributes, known to the model, interactions) of a user; UnknownIdError if none."""
        with self._lock:
            u = self._user_index.get(user_id)
            state = self._users.get(user_id)
            if u is None and state is None:
                raise UnknownIdError(f"unknown user id {user_id!r}")
            history = self._history(user_id)
            text = state.text if state else None
            if text is None and u is not None:
                text = self.model.catalogue.user_text[u]
            attributes = dict(state.attributes or {}) if state else {}
            return text, attributes, u is not None, int(history.size)

    def _history(self, user_id: str) -> np.ndarray:
        """Training items and items of events since, without repeats, training first."""
        u = self._user_index.get(user_id)
        trained = self.model.catalogue.seen[u].indices if u is not None else np.empty(0, np.int32)
        state = self._users.get(user_id)
        recent = list(state.events) if state and state.events else []
        if not recent:
            return np.asarray(trained, dtype=np.int64)
        extra = np.asarray(recent, dtype=np.int64)
        extra = extra[~np.isin(extra, trained)]
        return np.concatenate([np.asarray(trained, dtype=np.int64), extra])

    # ---- updates -------------------------------------------------------------------------
    def check_items(self, records: Sequence[ItemRecord]) -> list[str]:
        """Each item's text as the model will read it; NoTextError names the first without any."""
        rendered = []
        for j, r in enumerate(records):
            text = item_text(r, self.model.catalogue.item_template)
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
        with self._lock, self._encoder.persisting():  # item vectors survive a restart exactly
            m = self.model
            new = [
                (r, t)
                for r, t in zip(records, rendered, strict=True)
                if r.item_id not in self._item_index
            ]
            old = [
                (r, t)
                for r, t in zip(records, rendered, strict=True)
                if r.item_id in self._item_index
            ]
            created, updated = [r.item_id for r, _ in new], [r.item_id for r, _ in old]
            if new:
                start = m.catalogue.n_items
                m.add_items(
                    [r.item_id for r, _ in new],
                    texts=[t for _, t in new],
                    titles=[title_of(r.attributes, t) for r, t in new],
                )
                for j, (r, _) in enumerate(new):
                    self._item_index[r.item_id] = start + j
                self._live = np.concatenate([self._live, np.ones(len(new), dtype=bool)])
            changed = [
                (self._item_index[r.item_id], r, t)
                for r, t in old
                if m.catalogue.item_text[self._item_index[r.item_id]] != t
            ]
            if changed:
                m.update_item_texts(
                    np.array([i for i, _, _ in changed]),
                    [t for _, _, t in changed],
                    [title_of(r.attributes, t) for _, r, t in changed],
                )
            keys = np.array(sorted({self._item_index[r.item_id] for r in records}), dtype=np.int64)
            self._live[keys] = True
            self._popular_held = None
            self._index_items(keys)
            return created, updated

    def delete_item(self, item_id: str) -> bool:
        """Stop recommending an item; False if it is unknown or already deleted."""
        with self._lock:
            i = self._item_index.get(item_id)
            if i is None or not self._live[i]:
                return False
            self._live[i] = False
            self._popular_held = None
            self.index.remove(np.array([i]))
            self.similar_index.remove(np.array([i]))
            self.text_index.remove(np.array([i]))
            return True

    def upsert_users(self, records: Sequence[UserRecord]) -> None:
        with self._lock:
            for r in records:
                state = self._users.setdefault(r.user_id, _User())
                state.text = r.text.strip() if r.text and r.text.strip() else None
                state.attributes = dict(r.attributes)

    def add_events(self, events: Iterable[EventRecord]) -> int:
        """Fold stored events into their users' histories; unknown items are skipped."""
        n = 0
        with self._lock:
            for e in events:
                i = self._item_index.get(e.item_id)
                if i is None:
                    continue
                state = self._users.setdefault(e.user_id, _User())
                if state.events is None:
                    state.events = {}
                state.events[i] = None
                n += 1
        return n

    def restore(self, store: Store, since_seq: int = 0) -> None:
        """Replay the store: items, deletions, users, and the events after `since_seq`.

        Events up to `since_seq` are already in the model's training data (`warmstart retrain`).
        """
        items = store.items(include_deleted=True)
        live = [r for r in items if not r.deleted]
        if live:
            self.upsert_items(live)
        for r in items:
            if r.deleted:
                self.delete_item(r.item_id)
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
        cold_blend = self._cold_blend(blend)
        with self._lock:
            m = self.model
            u = self._user_index.get(user_id)
            state = self._users.get(user_id)
            history = self._history(user_id)
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
                keys, scores = self._warm_topk(u, history, k, exclude_seen)
                return self._ranked(route, keys, scores, history, None, None, explain)
            if route == SERVE_POPULAR:
                return self._popular(k, explain)
            query = ProfileQuery(text=text, attribute_text=attribute_text, items=history)
            return self._profile_ranked(route, query, k, exclude_seen, explain, cold_blend)

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
        cold_blend = self._cold_blend(None)
        with self._lock:
            m = self.model
            items = np.unique(np.array([self.item(i) for i in item_ids], dtype=np.int64))
            text = text.strip() if text and text.strip() else None
            attribute_text = render_attributes(m.catalogue.user_template, attributes or {})
            if not (text or attribute_text or items.size):
                return self._popular(k, explain)
            query = ProfileQuery(text=text, attribute_text=attribute_text, items=items)
            return self._profile_ranked("anonymous", query, k, exclude_seen, explain, cold_blend)

    def similar_items(self, item_id: str, k: int = 10) -> Ranked:
        """Items placed nearest in the collaborative space (cosine), the item itself excluded."""
        with self._lock:
            i = self.item(item_id)
            query = _unit(self.model.item_cf[[i]])
            keys, scores = self.similar_index.search(query, k, exclude=[{i}])
            return self._ranked(
                "similar", keys[0], scores[0], np.empty(0, np.int64), None, None, False
            )

    def _cold_blend(self, overrides: Mapping[str, float] | None) -> ColdBlend:
        """The model's cold-user blend with the service's settings, then the request's, on top."""
        return self.model.cold_blend_.with_overrides({**self.default_blend, **(overrides or {})})

    def _profile_ranked(
        self,
        route: str,
        query: ProfileQuery,
        k: int,
        exclude_seen: bool,
        explain: bool,
        blend: ColdBlend,
    ) -> Ranked:
        if self.index.is_exact:
            m = self.model
            scores = m.score_profile_parts(m.profile_parts([query], blend))
            scores[:, ~self._live] = -np.inf
            if exclude_seen and query.items.size:
                scores[0, query.items] = -np.inf
            keys, top = topk(scores, k, copy=False)
            keys, top = keys[0], top[0]
        else:
            keys, top = self._candidate_topk(query, k, exclude_seen, blend)
        return self._ranked(
            route, keys, top, query.items, query.attribute_text, query.text, explain
        )

    def _candidate_topk(
        self, query: ProfileQuery, k: int, exclude_seen: bool, blend: ColdBlend
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of a newcomer among candidates (see the module doc)."""
        m = self.model
        parts = m.profile_parts([query], blend)
        fetch = max(CANDIDATES, k)
        seen = set(query.items.tolist()) if exclude_seen else set()
        pools = [self.index.nearest_keys(parts.users[0], fetch + len(seen), CANDIDATE_DEPTH)]
        if parts.free.size:
            text = parts.text[0]
            pools.append(self.text_index.nearest_keys(text, fetch + len(seen), CANDIDATE_DEPTH))
        if parts.near is not None:
            pools.append(parts.near.indices)
        if blend.popularity_weight and not parts.described[0]:
            pools.append(self._top_popular(fetch)[0])
        cand = np.unique(np.concatenate(pools).astype(np.int64))
        cand = cand[cand >= 0]
        cand = cand[self._live[cand]]
        if seen:
            cand = cand[~np.isin(cand, query.items)]
        if cand.size == 0:  # everything they could get, they have already seen
            return np.full(k, -1, dtype=np.int64), np.full(k, -np.inf, dtype=np.float32)
        scores = m.score_profile_parts(parts, cand)
        order, top = topk(scores, k, copy=False)
        keys = np.where(order[0] >= 0, cand[np.maximum(order[0], 0)], -1)
        return keys, top[0]

    def _warm_topk(
        self, u: int, history: np.ndarray, k: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """A trained user's top-k: one inner-product search, or, where the model adds its
        history's neighbours and popularity, exact scores of the search's candidates, the
        neighbours and the most popular items."""
        m = self.model
        seen = set(history.tolist()) if exclude_seen else set()
        if not m.blends_warm_users:
            keys, scores = self.index.search(m.user_vectors[u], k, exclude=[seen] if seen else None)
            return keys[0], scores[0]
        if self.index.is_exact:
            cand = np.flatnonzero(self._live)
        else:
            fetch = max(CANDIDATES, k) + len(seen)
            pools = [self.index.nearest_keys(m.user_vectors[u], fetch, CANDIDATE_DEPTH)]
            if m.warm_neighbour_weight_:
                pools.append(m.history_neighbours(u))
            if m.warm_popularity_weight_:
                pools.append(self._top_popular(fetch)[0])
            cand = np.unique(np.concatenate(pools).astype(np.int64))
            cand = cand[cand >= 0]
            cand = cand[self._live[cand]]
        if seen:
            cand = cand[~np.isin(cand, history)]
        if cand.size == 0:
            return np.full(k, -1, dtype=np.int64), np.full(k, -np.inf, dtype=np.float32)
        order, top = topk(m.score_warm_user(u, cand), k, copy=False)
        return np.where(order[0] >= 0, cand[np.maximum(order[0], 0)], -1), top[0]

    def _top_popular(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most popular live items and their popularity.

        Kept between requests (ranking 100,000 items took a millisecond per newcomer) until an
        item is added, edited or deleted, or the model's popularity array is replaced.
        """
        pop = self.model.popularity
        held = self._popular_held
        if held is None or held[0] is not pop or held[1].size < min(k, pop.size):
            keys, top = topk(np.where(self._live, pop, -np.inf)[None, :], max(k, CANDIDATES))
            held = self._popular_held = (pop, keys[0], top[0])
        return held[1][:k], held[2][:k]

    def _popular(self, k: int, explain: bool) -> Ranked:
        keys, top = self._top_popular(k)
        return self._ranked(SERVE_POPULAR, keys, top, np.empty(0, np.int64), None, None, explain)

    def _ranked(
        self,
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
        external = self.model.catalogue.item_ids.to_external(keys)
        item_ids = [x.item() if isinstance(x, np.generic) else x for x in external]
        explanations = None
        if explain:
            explanations = self.model.explain_many(keys, history, scores, user_text, free_text)
        return Ranked(route, item_ids, [float(s) for s in scores], explanations)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)
