"""The immutable Dataset every model consumes: id maps, interactions as arrays, entity text and attributes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from warmstart.data.idmap import IdMap
from warmstart.data.templates import short_label

SHORT_TEXT_WORDS = 5  # below this median, item texts warn: titles alone, or codes


@dataclass(frozen=True)
class LoadReport:
    """What cleaning did to the input, so nothing changes silently."""

    raw_interactions: int = 0
    duplicates_merged: int = 0
    users_without_profile: int = 0
    items_without_text: int = 0
    users_without_text: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw_interactions": self.raw_interactions,
            "duplicates_merged": self.duplicates_merged,
            "users_without_profile": self.users_without_profile,
            "items_without_text": self.items_without_text,
            "users_without_text": self.users_without_text,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions plus item and user side information, indexed by dense internal ids.

    Arrays are aligned: interaction j is (users[j], items[j], weights[j], timestamps[j]).
    `item_text[i]` / `user_text[u]` is the rendered text of internal item i / user u, or None.
    `item_features` / `user_features` hold the raw attribute columns, row i = internal id i.
    `item_template` / `user_template` are the text templates used, so new entities given as
    attributes can be rendered the same way. Build one with `warmstart.data.from_frames`,
    `from_files` or a built-in loader rather than by hand.
    """

    user_ids: IdMap
    item_ids: IdMap
    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    timestamps: np.ndarray | None = None
    item_text: tuple[str | None, ...] = ()
    user_text: tuple[str | None, ...] = ()
    item_features: pd.DataFrame = field(default_factory=pd.DataFrame)
    user_features: pd.DataFrame = field(default_factory=pd.DataFrame)
    item_template: str | None = None
    user_template: str | None = None
    has_ratings: bool = False
    name: str = "custom"
    report: LoadReport = field(default_factory=LoadReport)

    def __post_init__(self) -> None:
        n = len(self.users)
        if len(self.items) != n or len(self.weights) != n:
            raise ValueError("users, items and weights must have the same length")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise ValueError("timestamps must align with interactions")
        if self.item_text and len(self.item_text) != self.n_items:
            raise ValueError("item_text must have one entry per item")
        if self.user_text and len(self.user_text) != self.n_users:
            raise ValueError("user_text must have one entry per user")
        for arr in (self.users, self.items, self.weights):
            arr.flags.writeable = False
        if self.timestamps is not None:
            self.timestamps.flags.writeable = False

    def __repr__(self) -> str:
        """Counts, not contents: printing a dataset must not print its catalogue."""
        parts = [
            f"{self.n_users:,} users",
            f"{self.n_items:,} items",
            f"{self.n_interactions:,} interactions" + (" (ratings)" if self.has_ratings else ""),
        ]
        for kind, texts in (("item", self.item_text), ("user", self.user_text)):
            if texts:
                parts.append(f"{kind} text {sum(bool(t) for t in texts):,}/{len(texts):,}")
        return f"Dataset({self.name!r}: {', '.join(parts)})"

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def matrix(self) -> sp.csr_matrix:
        """User x item interaction weights (CSR, float32); duplicates were merged at load time."""
        return sp.csr_matrix(
            (self.weights.astype(np.float32), (self.users, self.items)),
            shape=(self.n_users, self.n_items),
        )

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def item_texts(self) -> list[str]:
        """Item text for every item, '' where an item has none."""
        return [t or "" for t in (self.item_text or (None,) * self.n_items)]

    def user_texts(self) -> list[str | None]:
        return list(self.user_text or (None,) * self.n_users)

    def item_title(self, idx: int) -> str:
        """A human-readable label for an internal item: its title, else its text, else its id."""
        if "title" in self.item_features.columns:
            title = self.item_features["title"].iat[idx]
            if isinstance(title, str) and title.strip():
                return short_label(title)
        if self.item_text and self.item_text[idx]:
            return short_label(str(self.item_text[idx]))
        return str(self.item_ids.to_external([idx])[0])

    def text_summary(self, kind: str = "item") -> dict[str, Any]:
        """How much text the `kind` ("item" or "user") entities have: what a text model can
        learn from. Words are whitespace-separated tokens."""
        texts = self.item_text if kind == "item" else self.user_text
        n = self.n_items if kind == "item" else self.n_users
        words = np.array([len(t.split()) for t in texts if t and t.strip()], dtype=np.int64)
        summary: dict[str, Any] = {"with_text": len(words), "of": int(n)}
        if len(words):
            p10, p50, p90 = np.percentile(words, [10, 50, 90])
            summary.update(
                words_p10=round(float(p10), 1),
                words_median=round(float(p50), 1),
                words_p90=round(float(p90), 1),
            )
        return summary

    def text_warnings(self) -> list[str]:
        """What a newcomer should know before trusting text-based results on this data."""
        warnings: list[str] = []
        s = self.text_summary("item")
        if s["with_text"] == 0:
            return [
                "no item has text: cold items cannot be placed (give --items with a text column)"
            ]
        if s["with_text"] < 0.5 * s["of"]:
            warnings.append(
                f"only {s['with_text']:,} of {s['of']:,} items have text: the others get no "
                "text vector, and as cold items only popularity"
            )
        if s["words_median"] < SHORT_TEXT_WORDS:
            warnings.append(
                f"item texts are short (median {s['words_median']:g} words): text says little "
                "about an item; add a description or attributes to the template"
            )
        return warnings

    def with_interactions(self, keep: np.ndarray) -> Dataset:
        """Same users, items and text; only the interactions selected by `keep` (mask or positions)."""
        keep = np.asarray(keep)
        ts = None if self.timestamps is None else self.timestamps[keep].copy()
        return replace(
            self,
            users=self.users[keep].copy(),
            items=self.items[keep].copy(),
            weights=self.weights[keep].copy(),
            timestamps=ts,
        )
