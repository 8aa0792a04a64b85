"""The Recommender base class: one place that routes warm, cold and anonymous requests.

Subclasses implement scoring hooks on internal ids; the base class does id mapping, routing,
exclusion of seen items, top-k, explanations and safe persistence, so every model behaves the
same way at its edges.
"""

from __future__ import annotations

import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from warmstart import __version__
from warmstart._io import read_npz, staged_dir, write_json, write_npz
from warmstart.data.dataset import Dataset
from warmstart.data.templates import render_attributes, short_label, title_of
from warmstart.errors import ModelFormatError, NotFittedError
from warmstart.index.exact import topk
from warmstart.models.catalogue import Catalogue
from warmstart.text.core import MissingDependencyError

FORMAT_VERSION = 3  # 3: warmstart models carry the popularity fade and its choice (issue 17)
R = TypeVar("R", bound="Recommender")

ROUTE_WARM = "warm"  # user with training interactions
ROUTE_COLD = "cold"  # known user without interactions, served by the model from its profile
ROUTE_FALLBACK = "fallback"  # known user the model cannot serve: popularity
ROUTE_PROFILE = "profile"  # a user described at request time

# How a live service serves a user id (`Recommender.route_user`), beside the routes above that a
# fitted model alone knows.
SERVE_WARM = "warm"  # training interactions, nothing since: the fitted vector
SERVE_FOLD_IN = "fold-in"  # training interactions and events since: the history folded in
SERVE_FEW_SHOT = "few-shot"  # no training interactions, some events: those events and text
SERVE_TEXT_ONLY = "text-only"  # no interactions at all, a self-description or attributes
SERVE_POPULAR = "popular"  # nothing known: what most people pick


class ModelConfig(BaseModel):
    """Strict base for model configs: unknown keys are errors, and configs round-trip via JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Profile:
    """A user who is not in the data: free text, attributes rendered with the user template, or items."""

    text: str | None = None
    attributes: Mapping[str, Any] | None = None
    item_ids: Sequence[Any] | None = None


@dataclass(frozen=True)
class ProfileQuery:
    """A Profile resolved against the catalogue: what scoring hooks receive."""

    text: str | None
    attribute_text: str | None
    items: np.ndarray  # internal ids of the items the visitor named

    @property
    def user_text(self) -> str | None:
        """Everything the visitor said about themselves, as one text."""
        parts = [p for p in (self.attribute_text, self.text) if p]
        return ". ".join(parts) if parts else None


@dataclass(frozen=True)
class Recommendations:
    """Top-k for a batch of queries: internal and external item ids, scores, and how each was routed."""

    items: np.ndarray  # (batch, k) internal ids, -1 where fewer than k items were available
    item_ids: np.ndarray  # (batch, k) external ids (object), None where padded
    scores: np.ndarray  # (batch, k) float32, -inf where padded
    routes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def row(self, i: int) -> list[tuple[Any, float]]:
        """Recommendations of query i as (external item id, score) pairs, best first."""
        keep = self.items[i] >= 0
        return [
            (_plain(iid), float(s))
            for iid, s in zip(self.item_ids[i][keep], self.scores[i][keep], strict=True)
        ]


@dataclass(frozen=True)
class Explanation:
    """Why an item was recommended: the user's items or text nearest to it, and the blend weights."""

    item_id: Any
    score: float
    neighbours: tuple[tuple[Any, str, float], ...] = ()  # (item id, title, similarity)
    text_similarity: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        parts: list[str] = []
        if self.neighbours:
            names = ", ".join(f"{title!r} ({sim:.2f})" for _, title, sim in self.neighbours)
            parts.append(f"similar to what you liked: {names}")
        if self.text_similarity is not None:
            parts.append(f"matches your description (text similarity {self.text_similarity:.2f})")
        parts.extend(self.notes)
        return "; ".join(parts) if parts else "popular with users overall"

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": _plain(self.item_id),
            "score": self.score,
            "neighbours": [
                {"item_id": _plain(i), "title": t, "similarity": s} for i, t, s in self.neighbours
            ],
            "text_similarity": self.text_similarity,
            "notes": list(self.notes),
            "summary": self.summary(),
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# Every named model class, registered as it is defined; `load` finds a folder's class here.
_LOADABLE: dict[str, type[Recommender]] = {}


class Recommender(ABC):
    """Base class for every model. Batch-first: `recommend` takes many users; scalars are sugar.

    Class attributes declare what a model can serve; the base class routes each request:
    warm users to `_score_users`, cold users (known, no interactions) to `_score_users` when
    `serves_cold_users`, else to popularity, and visitors to `_score_profiles`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    serves_warm_users: ClassVar[bool] = True
    serves_cold_users: ClassVar[bool] = False
    serves_cold_items: ClassVar[bool] = False
    # Attributes saved and loaded as they are (plain arrays, no pickle); what needs converting
    # (sparse matrices, text maps, network weights) a model adds in `_state` / `_set_state`.
    saved_arrays: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if isinstance(name, str):  # a class that names itself can be loaded from its folder
            _LOADABLE[name] = cls

    def __init__(self, **params: Any) -> None:
        self.config = self.Config(**params)
        self._catalogue: Catalogue | None = None
        self._popularity: np.ndarray | None = None

    def __repr__(self) -> str:
        """The settings that differ from the defaults, and what it was fitted on."""
        args = [f"{k}={v!r}" for k, v in self.config.model_dump(exclude_defaults=True).items()]
        if self._catalogue is not None:
            cat = self._catalogue
            args.append(f"fitted on {cat.n_users:,} users x {cat.n_items:,} items")
        return f"{type(self).__name__}({', '.join(args)})"

    # ---- fitting -------------------------------------------------------------------------
    def fit(self: R, dataset: Dataset) -> R:
        """Learn from `dataset`; returns self."""
        catalogue = Catalogue.from_dataset(dataset)
        self._fit(dataset, catalogue)
        self._catalogue = catalogue
        self._popularity = self._popularity_from(catalogue)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset, catalogue: Catalogue) -> None: ...

    @staticmethod
    def _popularity_from(catalogue: Catalogue) -> np.ndarray:
        return np.log1p(catalogue.item_counts().astype(np.float32))

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(dataset) or load(dir)"
            )
        return self._catalogue

    @property
    def is_fitted(self) -> bool:
        return self._catalogue is not None

    # ---- scoring hooks -------------------------------------------------------------------
    @abstractmethod
    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores (len(users), n_items) for known users, by internal id."""

    def _score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        """Scores for visitors. Default: popularity (models override to use items or text)."""
        return np.tile(self._pop(), (len(queries), 1))

    def _item_similarity(self, item: int, others: np.ndarray) -> np.ndarray:
        """Similarity of `item` to `others`, used by explanations. Default: `_similar_scores`."""
        return self._similar_scores(np.array([item]))[0, others]

    def _similar_scores(self, items: np.ndarray) -> np.ndarray:
        """Item-to-item scores (len(items), n_items). Default: co-occurrence cosine."""
        cols = self.catalogue.seen.T.tocsr().astype(np.float32)
        cols.data[:] = 1.0
        norms = np.sqrt(np.asarray(cols.multiply(cols).sum(axis=1)).ravel()) + 1e-9
        sims = np.asarray((cols[items] @ cols.T).todense())
        return sims / (norms[items][:, None] * norms[None, :])

    def _score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Item scores for free text queries (similar_items by text). Needs a text-aware model."""
        raise NotImplementedError(f"{self.name} does not use text; use a text-aware model")

    def _pop(self) -> np.ndarray:
        if self._popularity is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted")
        return self._popularity

    @property
    def popularity(self) -> np.ndarray:
        """Each item's popularity (what the popular route ranks by); a new array after items are
        added, so a holder of the old one can tell."""
        return self._pop()

    def route_user(self, *, trained: bool, new_events: bool, history: int, described: bool) -> str:
        """How a service serves a user: the one place that decides (`SERVE_*`).

        `trained`: the user has interactions in the training data; `new_events`: events since;
        `history`: items in training data and events together; `described`: a self-description
        or attributes. A model that cannot serve users from what they did since its fit or from
        their text serves its trained users their fitted vectors and everyone else popularity.
        """
        if trained and (not new_events or not self.serves_cold_users):
            return SERVE_WARM
        if not self.serves_cold_users:
            return SERVE_POPULAR
        if history:
            return SERVE_FOLD_IN if trained else SERVE_FEW_SHOT
        return SERVE_TEXT_ONLY if described else SERVE_POPULAR

    # ---- public API ----------------------------------------------------------------------
    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-k for known users (batch). Users without interactions are routed to the cold path."""
        cat = self.catalogue
        _check_k(k)
        users = cat.user_ids.to_internal(list(user_ids), kind="user id")
        scores, routes = self.score_users(users)
        exclude = cat.seen[users] if exclude_seen else None
        return self._finish(scores, k, exclude, routes)

    def score_users(self, users: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """Scores over the whole catalogue for known users by internal id, routed as `recommend`.

        The unranked form of `recommend`, for evaluation: (len(users), n_items) float32 scores
        (seen items not excluded) and each user's route.
        """
        cat = self.catalogue
        users = np.asarray(users, dtype=np.int64)
        counts = cat.user_counts()[users]
        routes = np.where(
            counts > 0, ROUTE_WARM, ROUTE_COLD if self.serves_cold_users else ROUTE_FALLBACK
        )
        scores = np.empty((len(users), cat.n_items), dtype=np.float32)
        model_rows = routes != ROUTE_FALLBACK
        if model_rows.any():
            scores[model_rows] = self._score_users(users[model_rows])
        if (~model_rows).any():
            scores[~model_rows] = self._pop()
        return scores, tuple(str(r) for r in routes)

    def score_profiles(self, queries: Sequence[ProfileQuery]) -> np.ndarray:
        """Unranked scores (len(queries), n_items) for resolved visitors, for evaluation."""
        return np.asarray(self._score_profiles(list(queries)), dtype=np.float32)

    def recommend_one(
        self, user_id: Any, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Scalar convenience over `recommend`: the same result type, one row
        (`.row(0)` gives its (item id, score) pairs)."""
        return self.recommend([user_id], k=k, exclude_seen=exclude_seen)

    def recommend_for_profiles(
        self, profiles: Sequence[Profile], k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-k for visitors who are not in the data (batch)."""
        _check_k(k)
        queries = [self._resolve(p) for p in profiles]
        scores = self.score_profiles(queries)
        exclude = None
        if exclude_seen:
            rows = np.repeat(np.arange(len(queries)), [len(q.items) for q in queries])
            cols = np.concatenate([q.items for q in queries]) if queries else np.empty(0, int)
            exclude = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float32), (rows, cols)),
                shape=(len(queries), self.catalogue.n_items),
            )
        return self._finish(scores, k, exclude, (ROUTE_PROFILE,) * len(queries))

    def recommend_for_profile(
        self,
        text: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        item_ids: Sequence[Any] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """Scalar convenience: top-k for one visitor described by text, attributes and/or
        items, as `recommend_for_profiles`'s one-row result."""
        profile = Profile(text=text, attributes=attributes, item_ids=item_ids)
        return self.recommend_for_profiles([profile], k=k, exclude_seen=exclude_seen)

    def similar_items(
        self, item_ids: Sequence[Any] | None = None, text: Sequence[str] | None = None, k: int = 10
    ) -> Recommendations:
        """Items most similar to each given item (excluding itself), or to each free-text description."""
        _check_k(k)
        cat = self.catalogue
        if (item_ids is None) == (text is None):
            raise ValueError("give exactly one of item_ids or text")
        if item_ids is not None:
            items = cat.item_ids.to_internal(list(item_ids), kind="item id")
            scores = self._similar_scores(items)
            exclude = sp.csr_matrix(
                (np.ones(len(items), dtype=np.float32), (np.arange(len(items)), items)),
                shape=(len(items), cat.n_items),
            )
            return self._finish(scores, k, exclude, ("item",) * len(items))
        texts = list(text or [])
        return self._finish(self._score_texts(texts), k, None, ("text",) * len(texts))

    def explain(self, user_id: Any, item_id: Any, *, n_neighbours: int = 3) -> Explanation:
        """What drove `item_id`'s score for `user_id`: their nearest items, and model-specific notes."""
        cat = self.catalogue
        user = int(cat.user_ids.to_internal([user_id], kind="user id")[0])
        item = int(cat.item_ids.to_internal([item_id], kind="item id")[0])
        history = cat.seen[user].indices
        if history.size or self.serves_cold_users:
            score = float(self._score_users(np.array([user]))[0, item])
        else:
            score = float(self._pop()[item])
        # A warm user's history explains the score; their own text only when it is all we have.
        user_text = cat.user_text[user] if history.size == 0 else None
        return self._explain(item, history, score, user_text, None, n_neighbours)

    def explain_profile(
        self, profile: Profile, item_id: Any, *, n_neighbours: int = 3
    ) -> Explanation:
        """Explanation for a visitor (see `recommend_for_profiles`)."""
        query = self._resolve(profile)
        item = int(self.catalogue.item_ids.to_internal([item_id], kind="item id")[0])
        score = float(self._score_profiles([query])[0, item])
        return self._explain(item, query.items, score, query.user_text, query.text, n_neighbours)

    def _explain(
        self,
        item: int,
        history: np.ndarray,
        score: float,
        user_text: str | None,
        free_text: str | None,
        n_neighbours: int,
    ) -> Explanation:
        items = np.array([item], dtype=np.int64)
        return self.explain_many(items, history, [score], user_text, free_text, n_neighbours)[0]

    def explain_many(
        self,
        items: np.ndarray,
        history: np.ndarray,
        scores: Sequence[float] | np.ndarray,
        user_text: str | None = None,
        free_text: str | None = None,
        n_neighbours: int = 3,
    ) -> list[Explanation]:
        """Explanations of a list of recommended items (internal ids) for one user or visitor.

        The items are compared with the history in one block, not one item at a time: a served
        list of 10 explained items otherwise re-reads the whole history 10 times.
        """
        cat = self.catalogue
        items = np.asarray(items, dtype=np.int64)
        sims = self._items_similarity(items, history) if history.size and items.size else None
        text = free_text or user_text
        out: list[Explanation] = []
        for row, (item_id, item, score) in enumerate(
            zip(cat.item_ids.to_external(items), items.tolist(), scores, strict=True)
        ):
            neighbours: tuple[tuple[Any, str, float], ...] = ()
            if sims is not None:
                order = np.argsort(-sims[row], kind="stable")[:n_neighbours]
                order = order[sims[row, order] > 0]
                neighbours = tuple(
                    (_plain(other), cat.titles[history[j]], float(sims[row, j]))
                    for other, j in zip(
                        cat.item_ids.to_external(history[order]), order, strict=True
                    )
                )
            out.append(
                Explanation(
                    item_id=_plain(item_id),
                    score=float(score),
                    neighbours=neighbours,
                    text_similarity=self._text_similarity(text, item),
                    notes=tuple(self._explain_notes(item, history)),
                )
            )
        return out

    def _items_similarity(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        """(len(items), len(others)) similarities for explanations. Default: row by row."""
        return np.stack([self._item_similarity(int(i), others) for i in items])

    def _text_similarity(self, text: str | None, item: int) -> float | None:
        return None

    def fit_report(self) -> list[str]:
        """What fitting chose, one line each, for `warmstart fit` to print (nothing by default)."""
        return []

    def _explain_notes(self, item: int, history: np.ndarray) -> list[str]:
        return []

    def add_items(
        self,
        item_ids: Sequence[Any],
        texts: Sequence[str | None] | None = None,
        attributes: Sequence[Mapping[str, Any]] | None = None,
        titles: Sequence[str | None] | None = None,
    ) -> None:
        """Make new items recommendable at once, without refitting (text-aware models).

        Each item needs text: its own, else its attributes rendered with the data's item
        template. The checks and the catalogue are the same for every model; a model places the
        new rows in its own arrays (`_add_item_rows`). Growth replaces arrays and never writes
        what they held, so a shallow copy taken before (a service's published snapshot) still
        reads the catalogue it had.
        """
        if type(self)._add_item_rows is Recommender._add_item_rows:
            raise NotImplementedError(
                f"{self.name} cannot score items without interactions; use the 'warmstart' or "
                "'content-knn' model, or refit"
            )
        ids, rendered, labels = _new_items(self.catalogue, item_ids, texts, attributes, titles)
        self._add_item_rows(rendered)
        self._extend_catalogue(ids, rendered, labels)

    def _add_item_rows(self, texts: list[str]) -> None:
        """Append rows for new items (their rendered `texts`) to the model's item arrays."""
        raise NotImplementedError

    # ---- helpers -------------------------------------------------------------------------
    def _extend_catalogue(self, ids: list[Any], texts: list[str], titles: list[str]) -> None:
        """Append items added by `add_items` (no interactions yet) to the catalogue."""
        self._catalogue = self.catalogue.with_new_items(ids, texts, titles)
        self._popularity = self._popularity_from(self._catalogue)

    def _resolve(self, profile: Profile) -> ProfileQuery:
        cat = self.catalogue
        items = (
            cat.item_ids.to_internal(list(profile.item_ids), kind="item id")
            if profile.item_ids
            else np.empty(0, dtype=np.int64)
        )
        attribute_text = None
        if profile.attributes:
            if not cat.user_template:
                raise ValueError(
                    "this model's data had no user template, so attributes cannot be turned into "
                    "text; pass text= instead"
                )
            from warmstart.data.templates import TextTemplate

            attribute_text = TextTemplate(cat.user_template).render(profile.attributes)
        text = profile.text.strip() if profile.text and profile.text.strip() else None
        return ProfileQuery(text=text, attribute_text=attribute_text, items=np.unique(items))

    def _finish(
        self, scores: np.ndarray, k: int, exclude: sp.csr_matrix | None, routes: tuple[str, ...]
    ) -> Recommendations:
        items, top = topk(scores, k, exclude)
        external = np.empty(items.shape, dtype=object)
        valid = items >= 0
        external[valid] = self.catalogue.item_ids.to_external(items[valid])
        return Recommendations(items=items, item_ids=external, scores=top, routes=routes)

    # ---- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays that, with the config and catalogue, restore the fitted model exactly: the
        attributes named in `saved_arrays`, plus what a model adds in its override."""
        return {name: getattr(self, name) for name in self.saved_arrays}

    def _set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of `_state`."""
        for name in self.saved_arrays:
            setattr(self, name, arrays[name])

    def save(self, directory: str | Path) -> Path:
        """Write the model to `directory` (JSON + npz, no pickle); replaces it only when complete."""
        directory = Path(directory)
        with staged_dir(directory) as tmp:
            write_json(
                tmp / "model.json",
                {
                    "format_version": FORMAT_VERSION,
                    "model": self.name,
                    "config": self.config.model_dump(mode="json"),
                    "warmstart_version": __version__,
                },
            )
            write_npz(tmp / "state.npz", **self._state())
            self.catalogue.save(tmp)
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> Recommender:
        """Load a saved model; `Recommender.load` picks the class named in model.json among those
        imported (`warmstart.registry.load_model` imports them all).

        Any way the folder can be broken (missing or damaged files, a config of the wrong
        shape, arrays that do not fit the catalogue or each other) is a `ModelFormatError`
        naming the folder and what is wrong. What the folder says never decides where warmstart
        writes: the embedding cache folder is the caller's choice, not the config's.

        With `mmap`, the model's arrays are copy-on-write memory maps of `state.npz` (the
        service does this, so that N worker processes share one copy in the page cache).
        Every writer of a model folder replaces it by renaming, so a mapped file is never
        changed under a running process.
        """
        directory = Path(directory)
        try:
            model = cls._load(directory, mmap)
            model._check_state()
        except ModelFormatError as exc:
            if str(directory) in str(exc):
                raise
            raise ModelFormatError(f"{directory}: {exc}") from exc
        except MissingDependencyError:
            raise  # the folder is fine; its message says what to install
        except KeyError as exc:
            raise ModelFormatError(
                f"{directory}: incomplete model: no {exc} in its files; save or fit it again"
            ) from exc
        except Exception as exc:  # a damaged file fails in many ways (zip, numpy, pydantic, ...)
            raise ModelFormatError(
                f"{directory}: cannot load the model ({type(exc).__name__}: {exc})"
            ) from exc
        return model

    @classmethod
    def _load(cls, directory: Path, mmap: bool) -> Recommender:
        meta_path = directory / "model.json"
        if not meta_path.is_file():
            raise ModelFormatError(f"{directory} is not a saved warmstart model (no model.json)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"{meta_path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise ModelFormatError(
                f"{meta_path}: expected a JSON object, not {type(meta).__name__}"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFormatError(
                f"{meta_path}: format version {meta.get('format_version')!r}, this warmstart reads "
                f"{FORMAT_VERSION}; refit the model with this version"
            )
        name = str(meta.get("model"))
        if name not in _LOADABLE:
            raise ModelFormatError(
                f"{meta_path}: unknown model {name!r}; known: {', '.join(sorted(_LOADABLE))} "
                "(load folders of every kind with warmstart.registry.load_model)"
            )
        klass = _LOADABLE[name]
        if cls is not Recommender and not issubclass(klass, cls):
            raise ModelFormatError(f"{directory} holds a {klass.__name__}, not a {cls.__name__}")
        config = meta.get("config")
        if not isinstance(config, dict):
            raise ModelFormatError(f"{meta_path}: 'config' must be a JSON object")
        try:
            klass.Config.model_validate(config)  # strict: only the config's own fields
        except ValueError as exc:
            raise ModelFormatError(f"{meta_path}: invalid config: {exc}") from exc
        model = klass(**config)
        state = directory / "state.npz"
        try:
            arrays = read_npz(state, mmap=mmap)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelFormatError(
                f"{state}: missing or damaged ({type(exc).__name__}: {exc})"
            ) from exc
        model._catalogue = Catalogue.load(directory)
        model._popularity = model._popularity_from(model._catalogue)
        model._set_state(arrays)
        return model

    def _check_state(self) -> None:  # noqa: B027 (optional hook)
        """After loading: raise ModelFormatError where the arrays do not fit the catalogue."""


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _new_items(
    catalogue: Catalogue,
    item_ids: Sequence[Any],
    texts: Sequence[str | None] | None,
    attributes: Sequence[Mapping[str, Any]] | None,
    titles: Sequence[str | None] | None,
) -> tuple[list[Any], list[str], list[str]]:
    """Validate new items and render their text: given text, else their attributes
    (`render_attributes`, the service's policy too)."""
    ids = list(item_ids)
    if not ids:
        raise ValueError("add_items needs at least one item id")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("add_items got the same item id twice")
    known = catalogue.item_ids.lookup(ids)
    if (known >= 0).any():
        dup = ids[int(np.flatnonzero(known >= 0)[0])]
        raise ValueError(f"item {dup!r} is already in the catalogue")
    for name, seq in (("texts", texts), ("attributes", attributes), ("titles", titles)):
        if seq is not None and len(seq) != len(ids):
            raise ValueError(f"{name} has {len(seq)} entries for {len(ids)} item ids")
    rendered: list[str] = []
    for j in range(len(ids)):
        text = texts[j] if texts is not None else None
        if not (text and text.strip()) and attributes is not None:
            text = render_attributes(catalogue.item_template, attributes[j])
        if not (text and text.strip()):
            raise ValueError(
                f"item {ids[j]!r} has no text: a new item needs text to be recommendable"
            )
        rendered.append(text.strip())
    labels = [
        short_label(
            (titles[j] if titles is not None and titles[j] else None)
            or title_of(attributes[j] if attributes is not None else None, rendered[j])
        )
        for j in range(len(ids))
    ]
    return ids, rendered, labels
