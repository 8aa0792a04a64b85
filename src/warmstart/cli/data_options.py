"""Data arguments shared by commands: a built-in dataset name, or files with column names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from warmstart.data import BUILTIN_DATASETS, Dataset, from_files, load_builtin


@dataclass(frozen=True)
class DataSpec:
    dataset: str | None = None
    data_dir: Path | None = None
    interactions: Path | None = None
    items: Path | None = None
    users: Path | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str | None = None
    min_rating: float | None = None
    timestamp_col: str | None = None
    item_text: str | None = None
    user_text: str | None = None

    @property
    def given(self) -> bool:
        return self.dataset is not None or self.interactions is not None

    def load(self) -> Dataset:
        if self.dataset and self.interactions:
            raise ValueError("give either --dataset or --interactions, not both")
        if self.dataset:
            if self.dataset not in BUILTIN_DATASETS:
                raise ValueError(
                    f"unknown dataset {self.dataset!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)} "
                    "(or give your own files with --interactions/--items)"
                )
            data = load_builtin(self.dataset, self.data_dir)
            if self.min_rating is not None:
                if not data.has_ratings:
                    raise ValueError(f"--min-rating: {self.dataset} has no ratings")
                data = data.with_interactions(data.weights >= self.min_rating)
            return data
        if self.interactions is None:
            raise ValueError("no data: give --dataset NAME, or --interactions FILE [--items FILE]")
        return from_files(
            self.interactions,
            self.items,
            self.users,
            user_col=self.user_col,
            item_col=self.item_col,
            rating_col=self.rating_col,
            min_rating=self.min_rating,
            timestamp_col=self.timestamp_col,
            item_text=self.item_text,
            user_text=self.user_text,
            name=self.interactions.stem,
        )
