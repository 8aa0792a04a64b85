"""The data options every data-reading command takes, declared once as `DataSpec`'s fields.

Pasted into each command, they drifted (`--min-rating` reached three commands of six);
`@data_options` gives every command the same ones, with the same defaults and help.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from warmstart.data import BUILTIN_DATASETS, Dataset, from_files, load_builtin
from warmstart.errors import ConfigError, DataError

PANEL = "Data"

DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="built-in dataset: ml-100k, citeulike-a, or *-sparse",
        rich_help_panel=PANEL,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="folder with the datasets (else $WARMSTART_DATA, else ../shared/datasets)",
        rich_help_panel=PANEL,
    ),
]
InteractionsOpt = Annotated[
    Path | None,
    typer.Option("--interactions", help="your interactions file", rich_help_panel=PANEL),
]
ItemsOpt = Annotated[
    Path | None,
    typer.Option("--items", help="your items file (id + text columns)", rich_help_panel=PANEL),
]
UsersOpt = Annotated[
    Path | None,
    typer.Option("--users", help="your users file (id + text columns)", rich_help_panel=PANEL),
]
UserColOpt = Annotated[
    str, typer.Option("--user-col", help="user id column", rich_help_panel=PANEL)
]
ItemColOpt = Annotated[
    str, typer.Option("--item-col", help="item id column", rich_help_panel=PANEL)
]
ItemsIdColOpt = Annotated[
    str | None,
    typer.Option(
        "--items-id-col",
        help="id column of --items, where it is not --item-col",
        rich_help_panel=PANEL,
    ),
]
UsersIdColOpt = Annotated[
    str | None,
    typer.Option(
        "--users-id-col",
        help="id column of --users, where it is not --user-col",
        rich_help_panel=PANEL,
    ),
]
RatingColOpt = Annotated[
    str | None,
    typer.Option("--rating-col", help="rating or weight column", rich_help_panel=PANEL),
]
MinRatingOpt = Annotated[
    float | None,
    typer.Option("--min-rating", help="drop ratings below this", rich_help_panel=PANEL),
]
AllowNegativeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-negative-ratings",
        help="keep negative ratings (as negative feedback) instead of refusing them",
        rich_help_panel=PANEL,
    ),
]
TimestampColOpt = Annotated[
    str | None, typer.Option("--timestamp-col", help="timestamp column", rich_help_panel=PANEL)
]
ItemTextOpt = Annotated[
    str | None,
    typer.Option(
        "--item-text", help='item text template, e.g. "{title}. {plot}"', rich_help_panel=PANEL
    ),
]
UserTextOpt = Annotated[
    str | None,
    typer.Option("--user-text", help="user text template", rich_help_panel=PANEL),
]


@dataclass(frozen=True)
class DataSpec:
    """Where a command's data comes from: a built-in dataset, or the user's files and columns.

    Each field is the command-line option its annotation declares, with the field's default.
    """

    dataset: DatasetOpt = None
    data_dir: DataDirOpt = None
    interactions: InteractionsOpt = None
    items: ItemsOpt = None
    users: UsersOpt = None
    user_col: UserColOpt = "user_id"
    item_col: ItemColOpt = "item_id"
    items_id_col: ItemsIdColOpt = None
    users_id_col: UsersIdColOpt = None
    rating_col: RatingColOpt = None
    min_rating: MinRatingOpt = None
    allow_negative_ratings: AllowNegativeOpt = False
    timestamp_col: TimestampColOpt = None
    item_text: ItemTextOpt = None
    user_text: UserTextOpt = None

    @property
    def given(self) -> bool:
        return self.dataset is not None or self.interactions is not None

    def load(self) -> Dataset:
        if self.dataset and self.interactions:
            raise ConfigError("give either --dataset or --interactions, not both")
        if self.dataset:
            return self._load_builtin(self.dataset)
        if self.interactions is None:
            raise ConfigError("no data: give --dataset NAME, or --interactions FILE [--items FILE]")
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
            items_id_col=self.items_id_col,
            users_id_col=self.users_id_col,
            allow_negative_ratings=self.allow_negative_ratings,
        )

    def _load_builtin(self, name: str) -> Dataset:
        if name not in BUILTIN_DATASETS:
            raise ConfigError(
                f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)} "
                "(or give your own files with --interactions/--items)"
            )
        data = load_builtin(name, self.data_dir)
        if self.min_rating is None:
            return data
        if not data.has_ratings:
            raise DataError(f"--min-rating: {name} has no ratings")
        return data.with_interactions(data.weights >= self.min_rating)


def option_parameters() -> list[inspect.Parameter]:
    """The data options as keyword parameters, for a command's signature."""
    hints = get_type_hints(DataSpec, include_extras=True)
    return [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in dataclasses.fields(DataSpec)
    ]


def data_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` every data option, in place of its `data: DataSpec` parameter.

    Typer reads a command's options from its signature, so the wrapper shows typer the
    command's own options with the data options spliced in, and hands the command one
    `DataSpec` built from them.
    """
    signature = inspect.signature(command, eval_str=True)
    if "data" not in signature.parameters:
        raise TypeError(f"{command.__name__} takes no 'data' parameter for the data options")
    shared = option_parameters()
    names = [p.name for p in shared]
    clash = set(names) & set(signature.parameters)
    if clash:
        raise TypeError(f"{command.__name__} has parameters named like data options: {clash}")
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        params += shared if p.name == "data" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        spec = DataSpec(**{name: kwargs.pop(name) for name in names})
        command(data=spec, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper
