"""Build a validated `Dataset` from interaction, item and user tables (DataFrames or files).

Rules, so that nothing changes silently:

* External ids are kept as given (int or str). When the interactions and a side table disagree
  (one column integer, the other text), both are compared as text. Whole-number float ids (from
  a column that had blanks) become ints. Blank or missing ids are an error.
* Internal ids are dense. Items: items-table order when an items table is given (an interaction
  naming an item not in it is an error), else first appearance in the interactions. Users:
  users-table order, then users seen only in interactions in first-appearance order (valid users
  without a profile, counted in ``report.users_without_profile``).
* Weights: the rating column as float32 (non-numeric or missing is an error), else 1.0.
  ``min_rating`` drops interactions below it; users and items seen only in dropped rows stay in the
  id maps (they are known entities with no interactions). Timestamps: unix seconds or parseable
  date strings, stored as int64 seconds.
* Repeated user-item pairs are merged into one interaction: weights summed, latest timestamp kept,
  in first-appearance order.
* Text: ``item_text`` / ``user_text`` are `TextTemplate` strings over the side table's columns.
  Default: "{text}" when the table has a "text" column, else every non-id text column in table
  order joined as "{a}. {b}"; no text columns means no text.
* ``item_features`` / ``user_features``: the side table without its id column, one row per internal
  id (NaN rows for users without a profile).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from warmstart.data.dataset import Dataset, LoadReport
from warmstart.data.idmap import IdMap
from warmstart.data.readers import read_table, row_lines
from warmstart.data.templates import TextTemplate
from warmstart.errors import DataError


@dataclass
class _Table:
    """A frame plus where its rows came from, so errors can point at a file, line and column."""

    frame: pd.DataFrame
    label: str
    path: str | None
    lines: np.ndarray | None
    unit: str

    @classmethod
    def of(cls, frame: pd.DataFrame, label: str) -> _Table:
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{label} must be a pandas DataFrame, got {type(frame).__name__}")
        source = frame.attrs.get("source")
        return cls(
            frame=frame,
            label=label,
            path=str(source) if source is not None else None,
            lines=row_lines(frame),
            unit=str(frame.attrs.get("row_unit", "line")),
        )

    def error(self, message: str, pos: int | None = None, column: str | None = None) -> DataError:
        """A DataError at row position `pos`: file + line for text files, else the row number."""
        if pos is not None and self.lines is not None and self.unit == "line":
            return DataError(message, path=self.path, line=int(self.lines[pos]), column=column)
        where: list[str] = [] if self.path is not None else [f"{self.label} table"]
        if pos is not None and self.lines is not None:
            where.append(f"row {int(self.lines[pos])}")
        elif pos is not None:
            label = self.frame.index[pos]
            label = label.item() if isinstance(label, np.generic) else label
            where.append(f"row {pos} (index {label!r})")
        if column is not None:
            where.append(f"column {column!r}")
        err = DataError(f"{', '.join(where)}: {message}" if where else message, path=self.path)
        err.column = column
        return err

    def require(self, *columns: str | None) -> None:
        present = [str(c) for c in self.frame.columns]
        for col in columns:
            if col is not None and col not in self.frame.columns:
                raise DataError(
                    f"missing column {col!r} in the {self.label} table; "
                    f"columns present: {', '.join(present) or '(none)'}",
                    path=self.path,
                    column=col,
                )


def from_files(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    min_rating: float | None = None,
    item_text: str | None = None,
    user_text: str | None = None,
    name: str = "custom",
    items_id_col: str | None = None,
    users_id_col: str | None = None,
    allow_negative_ratings: bool = False,
) -> Dataset:
    """Read the tables with `read_table` (so errors name file and line), then `from_frames`."""
    return from_frames(
        read_table(interactions_path),
        read_table(items_path) if items_path is not None else None,
        read_table(users_path) if users_path is not None else None,
        user_col=user_col,
        item_col=item_col,
        rating_col=rating_col,
        timestamp_col=timestamp_col,
        min_rating=min_rating,
        item_text=item_text,
        user_text=user_text,
        name=name,
        items_id_col=items_id_col,
        users_id_col=users_id_col,
        allow_negative_ratings=allow_negative_ratings,
    )


def read_item_texts(
    path: str | Path, *, item_col: str = "item_id", item_text: str | None = None
) -> tuple[np.ndarray, tuple[str | None, ...]]:
    """An items file's ids and rendered texts (None where a row renders to nothing), with the
    same checks and the same default template as `from_files`: what a model fitted on this
    file would encode."""
    table = _Table.of(read_table(path), "items")
    table.require(item_col)
    ids = _ids(table, item_col, "item")
    _check_unique(table, ids, item_col, "item")
    texts = _render(table, _template(table, item_col, item_text), len(ids))
    if not texts:
        raise _no_text(item_col, table.path)
    return ids, texts


def parquet_item_template(
    path: str | Path, *, item_col: str = "item_id", item_text: str | None = None
) -> TextTemplate:
    """The text template `read_item_texts` would use for this Parquet items file, found from
    its schema alone (for readers that take the rows in blocks, elsewhere)."""
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises many types; all mean "not a readable parquet file"
        raise DataError(f"cannot read parquet file: {exc}", path=path) from None
    frame = schema.empty_table().to_pandas()
    frame.attrs["source"] = str(path)
    table = _Table.of(frame, "items")
    table.require(item_col)
    template = _template(table, item_col, item_text)
    if template is None:
        raise _no_text(item_col, table.path)
    return template


def _no_text(item_col: str, path: str | None) -> DataError:
    return DataError(
        f"no text to encode: no column besides {item_col!r} holds text; "
        "name one with a text template, e.g. '{title}. {description}'",
        path=path,
    )


def from_frames(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    min_rating: float | None = None,
    item_text: str | None = None,
    user_text: str | None = None,
    name: str = "custom",
    items_id_col: str | None = None,
    users_id_col: str | None = None,
    allow_negative_ratings: bool = False,
) -> Dataset:
    """Validate and index interaction, item and user tables into a Dataset (see the module doc).

    The items and users tables name their ids in `item_col` / `user_col` like the
    interactions, unless `items_id_col` / `users_id_col` say otherwise.
    """
    inter = _interactions_table(
        interactions, user_col, item_col, rating_col, timestamp_col, min_rating
    )
    item_key, user_key = items_id_col or item_col, users_id_col or user_col
    item_tab, user_tab = _side_tables(items, users, item_key, user_key, item_text, user_text)
    item_template = _template(item_tab, item_key, item_text)
    user_template = _template(user_tab, user_key, user_text)
    inter_items = _ids(inter, item_col, "item")
    inter_users = _ids(inter, user_col, "user")
    item_codes, item_index = _item_index(inter, item_tab, inter_items, item_col, item_key)
    user_codes, user_index, n_profiles = _user_index(user_tab, inter_users, user_key)
    rows = _rows(
        inter,
        user_codes,
        item_codes,
        len(item_index),
        rating_col,
        timestamp_col,
        min_rating,
        allow_negative_ratings,
    )

    n_items, n_users = len(item_index), len(user_index)
    item_texts = _render(item_tab, item_template, n_items)
    user_texts = _render(user_tab, user_template, n_users)
    report = LoadReport(
        raw_interactions=len(inter.frame),
        duplicates_merged=rows.merged,
        users_without_profile=n_users - n_profiles if user_tab is not None else 0,
        items_without_text=_count_missing(item_texts, n_items),
        users_without_text=_count_missing(user_texts, n_users),
        notes=tuple(rows.notes),
    )
    return Dataset(
        user_ids=IdMap(user_index),
        item_ids=IdMap(item_index),
        users=rows.users.astype(np.int32),
        items=rows.items.astype(np.int32),
        weights=rows.weights.astype(np.float32),
        timestamps=rows.timestamps,
        item_text=item_texts,
        user_text=user_texts,
        item_features=_features(item_tab, item_key, n_items),
        user_features=_features(user_tab, user_key, n_users),
        item_template=item_template.template if item_template is not None else None,
        user_template=user_template.template if user_template is not None else None,
        has_ratings=rating_col is not None,
        name=name,
        report=report,
    )


def _interactions_table(
    frame: pd.DataFrame,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    min_rating: float | None,
) -> _Table:
    """The interactions table, refused early if a named column is missing or it has no rows."""
    inter = _Table.of(frame, "interactions")
    inter.require(user_col, item_col, rating_col, timestamp_col)
    if min_rating is not None and rating_col is None:
        raise DataError("min_rating needs rating_col: there are no ratings to compare with")
    if len(inter.frame) == 0:
        raise inter.error("no interactions: the table has no rows")
    return inter


def _side_tables(
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    item_col: str,
    user_col: str,
    item_text: str | None,
    user_text: str | None,
) -> tuple[_Table | None, _Table | None]:
    """The items and users tables, each with its id column; a text template needs its table."""
    item_tab = _Table.of(items, "items") if items is not None else None
    user_tab = _Table.of(users, "users") if users is not None else None
    if item_tab is not None:
        item_tab.require(item_col)
    if user_tab is not None:
        user_tab.require(user_col)
    if item_tab is None and item_text is not None:
        raise DataError("item_text was given but there is no items table to render it from")
    if user_tab is None and user_text is not None:
        raise DataError("user_text was given but there is no users table to render it from")
    return item_tab, user_tab


def _item_index(
    inter: _Table, item_tab: _Table | None, inter_items: np.ndarray, item_col: str, table_col: str
) -> tuple[np.ndarray, pd.Index]:
    """Internal item id per interaction, and the external id per internal one.

    Items-table order when there is one (an interaction naming an item not in it is an error),
    else first appearance in the interactions.
    """
    if item_tab is None:
        codes, uniques = pd.factorize(inter_items)
        return codes, pd.Index(uniques)
    table_items = _ids(item_tab, table_col, "item")
    _check_unique(item_tab, table_items, table_col, "item")
    table_items, inter_items = _align(table_items, inter_items)
    item_index = pd.Index(table_items)
    item_codes = item_index.get_indexer(inter_items)
    unknown = np.flatnonzero(item_codes < 0)
    if unknown.size:
        pos = int(unknown[0])
        more = f"; {unknown.size - 1} more rows name unknown items" if unknown.size > 1 else ""
        where = f" {item_tab.path}" if item_tab.path else ""
        raise inter.error(
            f"item {inter_items[pos]!r} is not in the items table{where}{more}", pos, item_col
        )
    return item_codes, item_index


def _user_index(
    user_tab: _Table | None, inter_users: np.ndarray, user_col: str
) -> tuple[np.ndarray, pd.Index, int]:
    """Internal user id per interaction, the external id per internal one, and how many users
    have a profile row.

    Users-table order, then users seen only in interactions (valid, just without a profile) in
    first-appearance order.
    """
    if user_tab is None:
        codes, uniques = pd.factorize(inter_users)
        return codes, pd.Index(uniques), 0
    table_users = _ids(user_tab, user_col, "user")
    _check_unique(user_tab, table_users, user_col, "user")
    table_users, inter_users = _align(table_users, inter_users)
    n_profiles = len(table_users)
    user_codes = pd.Index(table_users).get_indexer(inter_users)
    new = user_codes < 0
    if not new.any():
        return user_codes, pd.Index(table_users), n_profiles
    extra_codes, extra = pd.factorize(inter_users[new])
    user_codes[new] = extra_codes + n_profiles
    return user_codes, pd.Index(table_users).append(pd.Index(extra)), n_profiles


@dataclass
class _Rows:
    """The interactions as internal ids, after `min_rating` and merging repeated pairs."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    timestamps: np.ndarray | None
    merged: int  # repeated user-item interactions folded into one
    notes: list[str]  # what was dropped or merged, for the load report


def _rows(
    inter: _Table,
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    n_items: int,
    rating_col: str | None,
    timestamp_col: str | None,
    min_rating: float | None,
    allow_negative: bool = False,
) -> _Rows:
    """Weights and timestamps per interaction; rows below `min_rating` dropped, repeats merged."""
    weights = _weights(inter, rating_col)
    if not allow_negative:
        negative = weights < 0
        if min_rating is not None:
            negative &= weights >= min_rating  # rows min_rating drops are no one's concern
        if negative.any():
            pos = int(np.flatnonzero(negative)[0])
            raise inter.error(
                f"rating {weights[pos]:g} is negative; a rating says how "
                "much a user liked an item: drop low ones with min_rating (--min-rating), or "
                "keep them as negative feedback with allow_negative_ratings "
                "(--allow-negative-ratings)",
                pos,
                rating_col,
            )
    timestamps = _timestamps(inter, timestamp_col)
    notes: list[str] = []
    users = np.asarray(user_codes, dtype=np.int64)
    items = np.asarray(item_codes, dtype=np.int64)
    if min_rating is not None:
        keep = weights >= min_rating
        dropped = int((~keep).sum())
        notes.append(
            f"min_rating={min_rating:g} dropped {dropped} of {len(inter.frame)} interactions"
        )
        users, items, weights = users[keep], items[keep], weights[keep]
        timestamps = timestamps[keep] if timestamps is not None else None
    users, items, weights, timestamps, merged = _merge_duplicates(
        users, items, weights, timestamps, n_items
    )
    if merged:
        notes.append(f"merged {merged} repeated user-item interactions (weights summed)")
    return _Rows(users, items, weights, timestamps, merged, notes)


def _template(table: _Table | None, id_col: str, given: str | None) -> TextTemplate | None:
    """The text template for a side table: the given one (checked), else the documented default."""
    if table is None:
        return None
    columns = list(table.frame.columns)
    if given is not None:
        template = TextTemplate(given)
        template.check_columns(columns, path=table.path)
        return template
    if "text" in columns and id_col != "text":
        return TextTemplate("{text}")
    text_cols = [
        str(c)
        for c in columns
        if c != id_col and isinstance(c, str) and _is_text(table.frame[c]) and "{" not in c
    ]
    return TextTemplate(". ".join(f"{{{c}}}" for c in text_cols)) if text_cols else None


def _is_text(column: pd.Series) -> bool:
    return bool(pd.api.types.is_string_dtype(column.dtype) or column.dtype == object)


def _ids(table: _Table, col: str, kind: str) -> np.ndarray:
    """The id column as an array of ints or strs; blank/missing ids are an error."""
    series = table.frame[col]
    missing = series.isna().to_numpy()
    values = series.to_numpy()
    if pd.api.types.is_bool_dtype(series.dtype):
        raise table.error(f"{kind} ids must be integers or strings, not booleans", 0, col)
    if pd.api.types.is_float_dtype(series.dtype):
        finite = values[~missing]
        if not np.all(np.mod(finite, 1) == 0):
            pos = int(np.flatnonzero(~missing)[np.flatnonzero(np.mod(finite, 1) != 0)[0]])
            raise table.error(f"{kind} id {values[pos]!r} is not a whole number", pos, col)
    elif pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        missing = missing | (series.str.strip() == "").to_numpy(dtype=bool, na_value=True)
    elif not pd.api.types.is_integer_dtype(series.dtype):
        stripped = series.map(lambda v: v.strip() if isinstance(v, str) else v)
        missing = missing | (stripped == "").to_numpy(dtype=bool)
    if missing.any():
        pos = int(np.flatnonzero(missing)[0])
        raise table.error(f"blank {kind} id", pos, col)
    if pd.api.types.is_float_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype):
        return np.asarray(values, dtype=np.int64)
    values = values.astype(object)
    return values


def _align(table_ids: np.ndarray, inter_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compare ids as text when one side is integer and the other is not."""
    if (table_ids.dtype == object) != (inter_ids.dtype == object):
        return table_ids.astype(str).astype(object), inter_ids.astype(str).astype(object)
    return table_ids, inter_ids


def _check_unique(table: _Table, ids: np.ndarray, col: str, kind: str) -> None:
    dup = pd.Index(ids).duplicated(keep="first")
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(pd.Index(ids) == ids[pos])[0])
        first_at = (
            f"line {int(table.lines[first])}"
            if table.lines is not None and table.unit == "line"
            else f"row {int(table.lines[first]) if table.lines is not None else first}"
        )
        raise table.error(
            f"duplicate {kind} id {ids[pos]!r} (first at {first_at}); each {kind} needs one row",
            pos,
            col,
        )


def _weights(table: _Table, rating_col: str | None) -> np.ndarray:
    n = len(table.frame)
    if rating_col is None:
        return np.ones(n, dtype=np.float64)
    raw = table.frame[rating_col]
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise table.error("ratings must be numbers, not booleans", 0, rating_col)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        value = raw.iloc[pos]
        what = "missing rating" if pd.isna(value) else f"rating {value!r} is not a finite number"
        raise table.error(what, pos, rating_col)
    return values


def _timestamps(table: _Table, col: str | None) -> np.ndarray | None:
    """Unix seconds (int64) from numbers or date strings; anything unparseable is an error."""
    if col is None:
        return None
    raw = table.frame[col]
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = pd.to_datetime(raw, utc=True)
        return _seconds(table, raw, parsed, col)
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise table.error("timestamps must be numbers or dates, not booleans", 0, col)
    numeric = pd.to_numeric(raw, errors="coerce")
    present = raw.notna().to_numpy()
    # The first value says what the column holds: one bad value among unix seconds is that
    # value's error, not a reason to read every other row as a date and blame the first.
    first = np.flatnonzero(present)
    if pd.api.types.is_numeric_dtype(raw.dtype) or (
        len(first) and pd.notna(numeric.iloc[int(first[0])])
    ):
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            value = raw.iloc[pos]
            what = "missing timestamp" if pd.isna(value) else f"invalid timestamp {value!r}"
            raise table.error(f"{what}; the column holds unix seconds", pos, col)
        return np.floor(values).astype(np.int64)
    text = raw.astype(object).where(raw.notna(), None)
    with warnings.catch_warnings():  # "could not infer format": we retry per element below
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(text, errors="coerce", utc=True)
        retry = parsed.isna().to_numpy() & present
        if retry.any():  # a column mixing date formats: parse the rest one by one
            again = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
            parsed = parsed.fillna(again)
    return _seconds(table, raw, parsed, col)


def _seconds(table: _Table, raw: pd.Series, parsed: pd.Series, col: str) -> np.ndarray:
    bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        value = raw.iloc[pos]
        what = "missing timestamp" if pd.isna(value) else f"cannot parse timestamp {value!r}"
        raise table.error(f"{what}; use unix seconds or a date like 2024-01-31 12:00:00", pos, col)
    delta = parsed - pd.Timestamp(0, tz="UTC")
    return np.asarray(delta // pd.Timedelta(seconds=1), dtype=np.int64)


def _merge_duplicates(
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    timestamps: np.ndarray | None,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, int]:
    """One interaction per user-item pair: weights summed, latest timestamp, first-seen order."""
    keys = users * max(n_items, 1) + items
    codes, uniques = pd.factorize(keys)
    merged = len(keys) - len(uniques)
    if not merged:
        return users, items, weights, timestamps, 0
    _, first = np.unique(codes, return_index=True)  # codes number pairs in first-seen order
    summed = np.bincount(codes, weights=weights, minlength=len(uniques))
    ts = None
    if timestamps is not None:
        ts = np.full(len(uniques), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(ts, codes, timestamps)
    return users[first], items[first], summed, ts, merged


def _render(table: _Table | None, template: TextTemplate | None, n: int) -> tuple[str | None, ...]:
    """Rendered text per internal id (table rows first, then None for entities without a row)."""
    if table is None or template is None:
        return ()
    texts = template.render_frame(table.frame)
    return tuple(texts) + (None,) * (n - len(texts))


def _count_missing(texts: tuple[str | None, ...], n: int) -> int:
    return sum(t is None for t in texts) if texts else n


def _features(table: _Table | None, id_col: str, n: int) -> pd.DataFrame:
    """Side-table columns (without the id) with row i = internal id i; NaN rows past the table."""
    if table is None:
        return pd.DataFrame(index=pd.RangeIndex(n))
    features = table.frame.drop(columns=[id_col]).reset_index(drop=True)
    features.attrs = {}
    if len(features) < n:
        features = features.reindex(pd.RangeIndex(n))
    return features
