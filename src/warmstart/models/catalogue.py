"""What a fitted model needs to answer requests: id maps, item labels and text, and who saw what.

Kept apart from the algorithms' arrays so a model does not own or mutate the training Dataset,
and so a saved model can serve on its own (`warmstart recommend --model DIR`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from warmstart._io import write_json, write_npz
from warmstart.data.dataset import Dataset
from warmstart.data.idmap import IdMap
from warmstart.errors import ModelFormatError


@dataclass(frozen=True, eq=False)
class Catalogue:
    user_ids: IdMap
    item_ids: IdMap
    seen: sp.csr_matrix  # users x items, interaction weights of the training data
    item_text: tuple[str, ...]
    user_text: tuple[str | None, ...]
    titles: tuple[str, ...]
    item_template: str | None = None
    user_template: str | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Catalogue:
        seen = dataset.matrix()
        seen.sum_duplicates()
        return cls(
            user_ids=dataset.user_ids,
            item_ids=dataset.item_ids,
            seen=seen,
            item_text=tuple(dataset.item_texts()),
            user_text=tuple(dataset.user_texts()),
            titles=tuple(dataset.item_title(i) for i in range(dataset.n_items)),
            item_template=dataset.item_template,
            user_template=dataset.user_template,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_counts(self) -> np.ndarray:
        return np.diff(self.seen.indptr)

    def item_counts(self) -> np.ndarray:
        """Interactions per item (read-only). Kept once computed: the catalogue never changes,
        and explaining a list of recommendations asks for it once per item."""
        counts = self.__dict__.get("_item_counts")
        if counts is None:
            counts = np.bincount(self.seen.indices, minlength=self.n_items)
            counts.setflags(write=False)
            object.__setattr__(self, "_item_counts", counts)
        return counts

    def with_new_items(self, ids: list[Any], texts: list[str], titles: list[str]) -> Catalogue:
        """A catalogue with items appended (no interactions yet)."""
        item_ids = self.item_ids.extend(ids)
        n_new = len(item_ids) - self.n_items
        seen = sp.csr_matrix(
            (self.seen.data, self.seen.indices, self.seen.indptr),
            shape=(self.n_users, self.n_items + n_new),
        )
        return replace(
            self,
            item_ids=item_ids,
            seen=seen,
            item_text=self.item_text + tuple(texts),
            titles=self.titles + tuple(titles),
        )

    def with_item_texts(self, items: np.ndarray, texts: list[str], titles: list[str]) -> Catalogue:
        """A catalogue where the given items (internal ids) have new text and titles."""
        item_text, labels = list(self.item_text), list(self.titles)
        for j, i in enumerate(np.asarray(items, dtype=np.int64)):
            item_text[i], labels[i] = texts[j], titles[j]
        return replace(self, item_text=tuple(item_text), titles=tuple(labels))

    def save(self, directory: Path) -> None:
        seen = self.seen.tocsr()
        write_npz(
            directory / "catalogue.npz",
            indptr=seen.indptr.astype(np.int64),
            indices=seen.indices.astype(np.int32),
            data=seen.data.astype(np.float32),
            shape=np.asarray(seen.shape, dtype=np.int64),
        )
        write_json(
            directory / "catalogue.json",
            {
                "user_ids": self.user_ids.to_list(),
                "item_ids": self.item_ids.to_list(),
                "item_text": list(self.item_text),
                "user_text": list(self.user_text),
                "titles": list(self.titles),
                "item_template": self.item_template,
                "user_template": self.user_template,
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Catalogue:
        try:
            meta = json.loads((directory / "catalogue.json").read_text(encoding="utf-8"))
            with np.load(directory / "catalogue.npz", allow_pickle=False) as z:
                shape = tuple(int(x) for x in z["shape"])
                seen = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            catalogue = cls(
                user_ids=IdMap(_ids(meta["user_ids"])),
                item_ids=IdMap(_ids(meta["item_ids"])),
                seen=seen,
                item_text=tuple(meta["item_text"]),
                user_text=tuple(meta["user_text"]),
                titles=tuple(meta["titles"]),
                item_template=meta.get("item_template"),
                user_template=meta.get("user_template"),
            )
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelFormatError(
                f"{directory}: cannot read the model's catalogue: {type(exc).__name__}: {exc}"
            ) from exc
        catalogue.check()
        return catalogue

    def check(self) -> None:
        """ModelFormatError unless every per-item and per-user list fits the id maps."""
        n_users, n_items = self.n_users, self.n_items
        problems = [
            f"{name} has {size} entries for {n} {kind}"
            for name, size, n, kind in (
                ("item_text", len(self.item_text), n_items, "items"),
                ("titles", len(self.titles), n_items, "items"),
                ("user_text", len(self.user_text), n_users, "users"),
            )
            if size != n
        ]
        if self.seen.shape != (n_users, n_items):
            problems.append(f"the interactions are {self.seen.shape}, not {(n_users, n_items)}")
        else:
            try:
                self.seen.check_format(full_check=True)
            except ValueError as exc:
                problems.append(f"the interactions are not a valid sparse matrix ({exc})")
        if any(not isinstance(t, str) for t in self.item_text + self.titles):
            problems.append("item_text and titles must be strings")
        if problems:
            raise ModelFormatError("inconsistent catalogue: " + "; ".join(problems))


def _ids(values: list[Any]) -> np.ndarray:
    """Rebuild an id array with the dtype the ids had: int64 when all are ints, else object."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=object)
