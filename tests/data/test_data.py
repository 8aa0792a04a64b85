"""Tests for warmstart.data: templates, readers, and the Dataset builder's rules and errors."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from warmstart.data import (
    Dataset,
    IdMap,
    TextTemplate,
    from_files,
    from_frames,
    read_table,
)
from warmstart.data.readers import row_lines
from warmstart.data.templates import render_attributes, title_of
from warmstart.errors import DataError, DataNotFoundError

# ---------------------------------------------------------------- templates

TOY = "Toy Story (1995)"
PERSON = "A {age}-year-old {gender} working as {occupation}"


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA, np.nan, "", "   ", [], [None]])
def test_template_missing_plot_leaves_no_trace(missing: object) -> None:
    t = TextTemplate("{title}. {plot}")
    assert t.render({"title": TOY, "plot": missing}) == TOY


def test_template_title_and_plot() -> None:
    t = TextTemplate("{title}. {plot}")
    assert t.render({"title": TOY, "plot": "A boy and his toys."}) == (
        "Toy Story (1995). A boy and his toys."
    )
    assert t.render({"title": None, "plot": "A boy."}) == "A boy."


def test_template_person_examples() -> None:
    t = TextTemplate(PERSON)
    full = {"age": 24, "gender": "man", "occupation": "technician"}
    assert t.render(full) == "A 24-year-old man working as technician"
    assert t.render({**full, "occupation": None}) == "A 24-year-old man"
    assert t.render({**full, "gender": float("nan")}) == "A 24-year-old working as technician"
    assert t.render({**full, "age": pd.NA}) == "A man working as technician"
    assert t.render({**full, "age": None, "gender": None}) == "A technician"


def test_template_all_missing_is_none() -> None:
    t = TextTemplate(PERSON)
    assert t.render({"age": None, "gender": math.nan, "occupation": " "}) is None


def test_template_values() -> None:
    t = TextTemplate("{a} | {b} | {c}")
    assert t.render({"a": 24.0, "b": ["x", None, "y"], "c": np.int64(3)}) == "24 | x, y | 3"
    assert t.render({"a": 2.5, "b": ("p",), "c": True}) == "2.5 | p | True"
    assert TextTemplate("{x:.1f}").render({"x": 2}) == "2.0"
    genres = TextTemplate("{title}. {genres:list}.")
    assert genres.render({"title": "T", "genres": "Animation|Children's"}) == (
        "T. Animation, Children's."
    )
    assert genres.render({"title": "T", "genres": ["A", "B"]}) == "T. A, B."
    assert genres.render({"title": "T", "genres": ""}) == "T."
    with pytest.raises(DataError, match="format spec"):
        TextTemplate("{x:d}").render({"x": "abc"})


def test_template_glued_brackets_and_sentence_end() -> None:
    t = TextTemplate("{title} ({year}), {plot}.")
    assert t.render({"title": "X", "year": None, "plot": "p"}) == "X, p."
    assert t.render({"title": "X", "year": 1995, "plot": None}) == "X (1995)."
    # punctuation the value already ends with is not doubled
    assert TextTemplate("{a}. {b}").render({"a": "Why?", "b": "Because."}) == "Why? Because."


def test_template_never_says_nan() -> None:
    t = TextTemplate("{a}, {b}; {c}")
    for row in ({"a": np.nan, "b": "x", "c": None}, {"a": "y", "b": pd.NA, "c": np.nan}):
        text = t.render(row)
        assert text is not None
        assert "nan" not in text.lower() and "none" not in text.lower() and "  " not in text
        assert not text.startswith((",", ";")) and not text.endswith((",", ";"))


def test_template_fields_and_unknown_field() -> None:
    t = TextTemplate("{title}. {genres}. {title}")
    assert t.fields == ("title", "genres")
    with pytest.raises(DataError) as err:
        t.render({"title": "x", "genre": "y"})
    assert "'genres'" in str(err.value) and "title, genre" in str(err.value)
    with pytest.raises(DataError, match=r"unknown field 'genres'.*available columns: title"):
        t.check_columns(["title"])


def test_template_rejects_positional_fields() -> None:
    with pytest.raises(DataError, match="positional"):
        TextTemplate("{} and {0}")


# ---------------------------------------------------------------- readers


def lines_of(frame: pd.DataFrame) -> list[int]:
    lines = row_lines(frame)
    assert lines is not None
    return [int(x) for x in lines]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_csv_keeps_ids_as_written(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "user_id,item_id,code,rating,note\n1,7,007,4.5,a\n2,8,12,3,\n")
    df = read_table(path)
    assert df["user_id"].tolist() == [1, 2] and df["user_id"].dtype == np.int64
    assert df["code"].tolist() == ["007", "12"]
    assert df["rating"].dtype == np.float64
    assert df["note"].iloc[0] == "a" and pd.isna(df["note"].iloc[1])
    assert df.attrs["source"] == str(path)
    assert lines_of(df) == [2, 3]


def test_read_tsv_and_blank_and_multiline_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", 'a\tb\n1\t"two\nlines"\n\n3\tc\n')
    df = read_table(path)
    assert df["a"].tolist() == [1, 3]
    assert df["b"].tolist() == ["two\nlines", "c"]
    assert lines_of(df) == [2, 5]


def test_read_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "a\n1\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    msg = str(err.value)
    assert "t.txt" in msg and ".csv" in msg and ".parquet" in msg and ".jsonl" in msg


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"nope\.csv"):
        read_table(tmp_path / "nope.csv")


def test_read_empty_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        read_table(write(tmp_path / "e.csv", ""))


def test_read_undecodable_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\n1,ok\n2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_table(path)
    assert err.value.path == str(path) and err.value.line == 3 and err.value.column == "title"
    assert "items.csv, line 3, column 'title'" in str(err.value)


def test_read_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"user_id": "007", "n": 1}\n\n{"user_id": "8", "n": 2}\n')
    df = read_table(path)
    assert df["user_id"].tolist() == ["007", "8"]
    assert df["n"].tolist() == [1, 2]
    assert lines_of(df) == [1, 3]


def test_read_malformed_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path / "t.ndjson", '{"a": 1}\n{"a": 2,}\n')
    with pytest.raises(DataError) as err:
        read_table(path)
    assert err.value.line == 2 and "t.ndjson, line 2" in str(err.value)
    with pytest.raises(DataError, match=r"line 1.*JSON object"):
        read_table(write(tmp_path / "u.jsonl", "[1, 2]\n"))


def test_read_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1, 2], "b": ["x", None]}).to_parquet(path)
    df = read_table(path)
    assert df["a"].tolist() == [1, 2]
    assert df.attrs["row_unit"] == "row" and lines_of(df) == [1, 2]


# ---------------------------------------------------------------- builder: happy paths

INTERACTIONS = "user_id,item_id,rating,ts\nu1,i2,4,100\nu2,i1,5,200\nu1,i1,3,300\nu3,i3,1,400\n"
ITEMS = "item_id,title,plot\ni1,Alpha,First plot.\ni2,Beta,\ni3,Gamma,Third plot.\ni4,Delta,\n"
USERS = "user_id,age,gender,occupation\nu2,53,woman,other\nu1,24,man,\n"


def files(tmp_path: Path, interactions: str = INTERACTIONS, items: str | None = ITEMS,
          users: str | None = USERS) -> tuple[Path, Path | None, Path | None]:  # fmt: skip
    i = write(tmp_path / "interactions.csv", interactions)
    it = write(tmp_path / "items.csv", items) if items is not None else None
    us = write(tmp_path / "users.csv", users) if users is not None else None
    return i, it, us


def build(tmp_path: Path, **kwargs: Any) -> Dataset:
    i, it, us = files(tmp_path)
    return from_files(i, it, us, rating_col="rating", timestamp_col="ts", **kwargs)


def test_from_files_basic(tmp_path: Path) -> None:
    ds = build(tmp_path, user_text=PERSON)
    assert ds.item_ids.to_list() == ["i1", "i2", "i3", "i4"]  # items-table order
    assert ds.user_ids.to_list() == ["u2", "u1", "u3"]  # table order, then interaction-only
    assert ds.users.dtype == np.int32 and ds.items.dtype == np.int32
    assert ds.weights.dtype == np.float32 and ds.timestamps is not None
    assert ds.timestamps.dtype == np.int64
    assert ds.users.tolist() == [1, 0, 1, 2] and ds.items.tolist() == [1, 0, 0, 2]
    assert ds.weights.tolist() == [4, 5, 3, 1] and ds.timestamps.tolist() == [100, 200, 300, 400]
    assert ds.has_ratings and ds.name == "custom"
    assert ds.item_template == "{title}. {plot}"  # default: the non-id text columns
    assert ds.item_text == ("Alpha. First plot.", "Beta", "Gamma. Third plot.", "Delta")
    assert ds.user_template == PERSON
    assert ds.user_text == ("A 53-year-old woman working as other", "A 24-year-old man", None)
    assert ds.report.raw_interactions == 4 and ds.report.users_without_profile == 1
    assert ds.report.users_without_text == 1 and ds.report.items_without_text == 0
    assert list(ds.item_features.columns) == ["title", "plot"]
    assert ds.item_features["title"].tolist() == ["Alpha", "Beta", "Gamma", "Delta"]
    assert list(ds.user_features.columns) == ["age", "gender", "occupation"]
    assert len(ds.user_features) == 3 and ds.user_features.iloc[2].isna().all()
    assert ds.user_features["age"].iloc[1] == 24


def test_implicit_without_side_tables(tmp_path: Path) -> None:
    i, _, _ = files(tmp_path, items=None, users=None)
    ds = from_files(i, name="mine")
    assert ds.item_ids.to_list() == ["i2", "i1", "i3"]  # first appearance
    assert ds.user_ids.to_list() == ["u1", "u2", "u3"]
    assert ds.weights.tolist() == [1, 1, 1, 1] and not ds.has_ratings
    assert ds.timestamps is None and ds.item_text == () and ds.user_text == ()
    assert ds.item_template is None and ds.name == "mine"
    assert ds.report.users_without_profile == 0 and ds.report.items_without_text == 3


def test_text_column_is_the_default_template() -> None:
    inter = pd.DataFrame({"user_id": [1], "item_id": [5]})
    items = pd.DataFrame({"item_id": [5, 6], "title": ["T", "U"], "text": ["hello", None]})
    ds = from_frames(inter, items)
    assert ds.item_template == "{text}" and ds.item_text == ("hello", None)
    assert ds.report.items_without_text == 1
    assert ds.item_ids.is_integer and ds.item_ids.to_list() == [5, 6]


def test_explicit_template_unknown_field(tmp_path: Path) -> None:
    i, it, _ = files(tmp_path)
    with pytest.raises(DataError) as err:
        from_files(i, it, item_text="{title}: {summary}")
    msg = str(err.value)
    assert "items.csv" in msg and "'summary'" in msg and "item_id, title, plot" in msg


def test_duplicates_merged(tmp_path: Path) -> None:
    text = "user_id,item_id,rating,ts\n1,10,1,100\n2,10,1,50\n1,10,2,300\n1,11,1,10\n1,10,1,200\n"
    i, _, _ = files(tmp_path, interactions=text, items=None, users=None)
    ds = from_files(i, rating_col="rating", timestamp_col="ts")
    assert ds.report.raw_interactions == 5 and ds.report.duplicates_merged == 2
    assert ds.n_interactions == 3
    pairs = list(
        zip(ds.user_ids.to_external(ds.users), ds.item_ids.to_external(ds.items), strict=True)
    )
    assert pairs == [(1, 10), (2, 10), (1, 11)]
    assert ds.weights.tolist() == [4, 1, 1] and ds.timestamps is not None
    assert ds.timestamps.tolist() == [300, 50, 10]
    assert any("merged 2" in n for n in ds.report.notes)


def test_min_rating(tmp_path: Path) -> None:
    ds = build(tmp_path, min_rating=3)
    assert ds.n_interactions == 3 and ds.weights.min() >= 3
    assert ds.n_users == 3  # u3 only rated below the threshold: still a known user
    assert any("dropped 1 of 4" in n for n in ds.report.notes)
    i, _, _ = files(tmp_path)
    with pytest.raises(DataError, match="min_rating needs rating_col"):
        from_files(i, min_rating=3)


def test_date_string_timestamps() -> None:
    inter = pd.DataFrame(
        {"user_id": [1, 2], "item_id": [1, 1], "when": ["1970-01-02", "2024-01-31 12:00:00"]}
    )
    ds = from_frames(inter, timestamp_col="when")
    assert ds.timestamps is not None and ds.timestamps.tolist() == [86400, 1706702400]
    inter["when"] = pd.to_datetime(inter["when"], format="mixed")
    again = from_frames(inter, timestamp_col="when")
    assert again.timestamps is not None and again.timestamps.tolist() == [86400, 1706702400]


def test_int_and_text_ids_are_compared_as_text() -> None:
    inter = pd.DataFrame({"user_id": [1, 1], "item_id": [7, 8]})
    items = pd.DataFrame({"item_id": ["007", "7", "8"], "title": ["a", "b", "c"]})
    ds = from_frames(inter, items)
    assert ds.item_ids.to_list() == ["007", "7", "8"]
    assert ds.items.tolist() == [1, 2]


def test_whole_float_ids_become_ints() -> None:
    inter = pd.DataFrame({"user_id": [1.0, 2.0], "item_id": [3, 4]})
    ds = from_frames(inter)
    assert ds.user_ids.to_list() == [1, 2] and ds.user_ids.is_integer


def test_features_align_with_internal_ids() -> None:
    inter = pd.DataFrame({"user_id": ["b", "a"], "item_id": [1, 1]})
    users = pd.DataFrame({"user_id": ["a"], "age": [30]})
    ds = from_frames(inter, users=users, user_text="{age} years")
    assert ds.user_ids.to_list() == ["a", "b"]
    assert ds.user_features["age"].iloc[0] == 30 and pd.isna(ds.user_features["age"].iloc[1])
    assert ds.user_text == ("30 years", None)
    assert isinstance(ds.item_ids, IdMap) and ds.item_features.shape == (1, 0)


FORMATS = ["csv", "tsv", "jsonl", "parquet"]


def save(frame: pd.DataFrame, path: Path) -> Path:
    fmt = path.suffix[1:]
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_formats_give_the_same_dataset(tmp_path: Path, fmt: str) -> None:
    inter = pd.DataFrame(
        {
            "user_id": [3, 1, 3, 2],
            "item_id": ["b", "a", "a", "c"],
            "rating": [4.5, 3.0, 2.0, 5.0],
            "ts": [10, 20, 30, 40],
        }
    )
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B", None], "year": [1, 2, 3]})
    users = pd.DataFrame({"user_id": [1, 2], "bio": ["likes tea", "x"]})
    kw: dict[str, Any] = {
        "rating_col": "rating",
        "timestamp_col": "ts",
        "item_text": "{title} ({year})",
    }
    want = from_frames(inter, items, users, **kw)
    got = from_files(
        save(inter, tmp_path / f"i.{fmt}"),
        save(items, tmp_path / f"it.{fmt}"),
        save(users, tmp_path / f"u.{fmt}"),
        **kw,
    )
    assert got.user_ids == want.user_ids and got.item_ids == want.item_ids
    assert got.user_ids.to_list() == [1, 2, 3] and got.user_ids.is_integer
    for name in ("users", "items", "weights", "timestamps"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert got.item_text == want.item_text == ("A (1)", "B (2)", "(3)")
    assert got.user_text == want.user_text == ("likes tea", "x", None)
    pd.testing.assert_frame_equal(
        got.item_features, want.item_features, check_dtype=False, check_index_type=False
    )
    assert got.report.to_dict() == want.report.to_dict()


def test_build_is_fast() -> None:
    rng = np.random.default_rng(0)
    n = 205_000
    inter = pd.DataFrame(
        {"user_id": rng.integers(0, 5_551, n), "item_id": rng.integers(0, 16_980, n)}
    )
    items = pd.DataFrame({"item_id": np.arange(16_980), "title": [f"t{i}" for i in range(16_980)]})
    start = time.perf_counter()
    ds = from_frames(inter, items)
    assert time.perf_counter() - start < 2.0
    assert ds.n_interactions + ds.report.duplicates_merged == n


# ---------------------------------------------------------------- builder: bad input


def error_of(tmp_path: Path, interactions: str = INTERACTIONS, items: str | None = ITEMS,
             users: str | None = USERS, **kwargs: Any) -> DataError:  # fmt: skip
    i, it, us = files(tmp_path, interactions, items, users)
    with pytest.raises(DataError) as err:
        from_files(i, it, us, **kwargs)
    return err.value


def assert_where(err: DataError, file: str, line: int | None, column: str | None) -> None:
    """The message names the file, line and column (and the attributes agree)."""
    msg = str(err)
    assert err.path is not None and err.path.endswith(file) and file in msg
    assert err.line == line
    if line is not None:
        assert f"line {line}" in msg
    assert err.column == column
    if column is not None:
        assert f"column {column!r}" in msg


def test_missing_column(tmp_path: Path) -> None:
    err = error_of(tmp_path, rating_col="stars")
    assert_where(err, "interactions.csv", None, "stars")
    assert "missing column 'stars'" in str(err) and "user_id, item_id, rating, ts" in str(err)
    err = error_of(tmp_path, items="id,title\ni1,x\n")
    assert_where(err, "items.csv", None, "item_id")
    assert "columns present: id, title" in str(err)
    err = error_of(tmp_path, users="uid,age\nu1,3\n")
    assert_where(err, "users.csv", None, "user_id")


def test_unknown_item(tmp_path: Path) -> None:
    err = error_of(tmp_path, items="item_id,title\ni1,x\ni2,y\n")
    assert_where(err, "interactions.csv", 5, "item_id")
    assert "'i3' is not in the items table" in str(err) and "items.csv" in str(err)


def test_duplicate_ids_in_side_tables(tmp_path: Path) -> None:
    err = error_of(tmp_path, items="item_id,title\ni1,x\ni2,y\ni3,z\ni2,w\n")
    assert_where(err, "items.csv", 5, "item_id")
    assert "duplicate item id 'i2'" in str(err) and "first at line 3" in str(err)
    err = error_of(tmp_path, users="user_id,age\nu1,1\nu1,2\n")
    assert_where(err, "users.csv", 3, "user_id")


def test_blank_ids(tmp_path: Path) -> None:
    err = error_of(tmp_path, interactions="user_id,item_id\nu1,i1\n  ,i2\n")
    assert_where(err, "interactions.csv", 3, "user_id")
    assert "blank user id" in str(err)
    err = error_of(tmp_path, items="item_id,title\ni1,x\n,y\n")
    assert_where(err, "items.csv", 3, "item_id")
    path = write(tmp_path / "blank.jsonl", '{"user_id": "a", "item_id": 1}\n{"user_id": "a"}\n')
    with pytest.raises(DataError) as e:
        from_files(path)
    assert_where(e.value, "blank.jsonl", 2, "item_id")


def test_non_numeric_rating(tmp_path: Path) -> None:
    text = "user_id,item_id,rating\nu1,i1,4\nu1,i2,five\n"
    err = error_of(tmp_path, interactions=text, rating_col="rating")
    assert_where(err, "interactions.csv", 3, "rating")
    assert "'five'" in str(err)
    err = error_of(tmp_path, interactions="user_id,item_id,rating\nu1,i1,\n", rating_col="rating")
    assert_where(err, "interactions.csv", 2, "rating")
    assert "missing rating" in str(err)


def test_bad_timestamp(tmp_path: Path) -> None:
    text = "user_id,item_id,ts\nu1,i1,2024-01-01\nu1,i2,yesterday\n"
    err = error_of(tmp_path, interactions=text, timestamp_col="ts")
    assert_where(err, "interactions.csv", 3, "ts")
    assert "'yesterday'" in str(err)
    err = error_of(
        tmp_path, interactions="user_id,item_id,ts\nu1,i1,5\nu1,i2,\n", timestamp_col="ts"
    )
    assert_where(err, "interactions.csv", 3, "ts")
    assert "missing timestamp" in str(err)


def test_a_bad_value_among_unix_seconds_is_the_one_blamed(tmp_path: Path) -> None:
    rows = [f"u{i % 5},i{1 + i % 2},{1_700_000_000 + i}" for i in range(60)]
    rows[55] = "u0,i1,17000x"  # line 57: the header is line 1
    err = error_of(
        tmp_path, interactions="user_id,item_id,ts\n" + "\n".join(rows) + "\n", timestamp_col="ts"
    )
    assert_where(err, "interactions.csv", 57, "ts")
    assert "invalid timestamp '17000x'" in str(err) and "unix seconds" in str(err)


def test_errors_in_jsonl_and_parquet_name_the_row(tmp_path: Path) -> None:
    path = write(
        tmp_path / "i.jsonl",
        '{"user_id": 1, "item_id": 1, "r": 1}\n\n{"user_id": 1, "item_id": 2, "r": "x"}\n',
    )
    with pytest.raises(DataError) as err:
        from_files(path, rating_col="r")
    assert_where(err.value, "i.jsonl", 3, "r")
    pq = save(
        pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "r": ["1", "x"]}),
        tmp_path / "i.parquet",
    )
    with pytest.raises(DataError) as err:
        from_files(pq, rating_col="r")
    assert_where(err.value, "i.parquet", None, "r")
    assert "row 2" in str(err.value)


def test_errors_on_plain_frames_name_the_row() -> None:
    inter = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "r": [1, "x"]}, index=[10, 11])
    with pytest.raises(DataError) as err:
        from_frames(inter, rating_col="r")
    assert "interactions table" in str(err.value) and "row 1 (index 11)" in str(err.value)
    assert err.value.column == "r"
    with pytest.raises(DataError, match="no rows"):
        from_frames(inter.iloc[:0])
    with pytest.raises(DataError, match="no items table"):
        from_frames(inter, item_text="{title}")


@pytest.mark.parametrize("ids", [[10, 20, 30], ["a", "b", "c"]])
def test_extended_id_map_answers_like_one_built_whole(ids: list[Any]) -> None:
    grown = IdMap(ids).extend([ids[1], type(ids[0])(ids[0] * 4), ids[2]])  # one new id
    grown = grown.extend([type(ids[0])(ids[0] * 5), type(ids[0])(ids[0] * 5)])  # a repeat
    whole = IdMap([*ids, ids[0] * 4, ids[0] * 5])
    assert grown == whole and len(grown) == 5
    probe = [ids[0] * 5, ids[1], "nope", ids[0] * 4]
    np.testing.assert_array_equal(grown.lookup(probe), whole.lookup(probe))
    np.testing.assert_array_equal(grown.lookup(probe), [4, 1, -1, 3])
    assert grown.external.dtype == whole.external.dtype
    np.testing.assert_array_equal(grown.to_external([4, 0, 3]), whole.to_external([4, 0, 3]))
    assert grown.to_list() == whole.to_list()
    if isinstance(ids[0], int):
        assert grown.lookup(["40"])[0] == 3  # digits typed as text still find integer ids


def test_attributes_render_one_way_for_library_and_service() -> None:
    """The data's template where it renders something (fields it names but the attributes lack
    left out), else `key: value` pairs; blank titles fall back to the text."""
    assert render_attributes("{title}. {genre}", {"title": "X"}) == "X"
    assert render_attributes("{genre}", {"title": "X"}) == "title: X"
    assert (
        render_attributes(None, {"title": "X", "year": 1999, "empty": " "})
        == "title: X. year: 1999"
    )
    assert render_attributes("{title}", {}) is None
    assert title_of({"title": " "}, "the text") == "the text"
    assert title_of({"title": "Heat"}, "the text") == "Heat"


def test_a_dataset_prints_its_counts_not_its_catalogue() -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A long title " * 20, None, "C"]})
    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "c"], "r": [5, 3, 4]})
    ds = from_frames(inter, items, rating_col="r", name="shop")
    text = repr(ds)
    assert text == "Dataset('shop': 2 users, 3 items, 3 interactions (ratings), item text 2/3)"
    assert str(ds) == text and "long title" not in text


def test_items_and_users_files_may_name_their_ids_differently(tmp_path: Path) -> None:
    inter = write(tmp_path / "inter.csv", "user_id,item_id\nu1,i1\nu2,i2\n")
    items = write(tmp_path / "items.csv", "asin,title\ni1,A book\ni2,A lamp\n")
    users = write(tmp_path / "users.csv", "uid,about\nu1,I read\n")
    ds = from_files(inter, items, users, items_id_col="asin", users_id_col="uid")
    assert ds.item_ids.to_list() == ["i1", "i2"] and ds.item_text == ("A book", "A lamp")
    assert ds.user_text[0] == "I read" and "asin" not in ds.item_features.columns
    with pytest.raises(DataError) as err:
        from_files(inter, items, items_id_col="sku")
    assert_where(err.value, "items.csv", None, "sku")
    with pytest.raises(DataError, match="missing column 'item_id' in the items table"):
        from_files(inter, items)


def test_text_summary_and_the_warnings_a_newcomer_needs() -> None:
    inter = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["a", "b", "c", "d"]})
    short = pd.DataFrame({"item_id": list("abcd"), "title": ["Lamp", "Red lamp", "Chair", "X"]})
    ds = from_frames(inter, short)
    assert ds.text_summary("item") == {
        "with_text": 4,
        "of": 4,
        "words_p10": 1.0,
        "words_median": 1.0,
        "words_p90": 1.7,
    }
    (warning,) = ds.text_warnings()
    assert "short (median 1 words)" in warning
    sparse = short.assign(title=["A lamp with a warm light for reading", None, None, None])
    (warning,) = from_frames(inter, sparse).text_warnings()
    assert warning.startswith("only 1 of 4 items have text")
    long = short.assign(title=["a lamp with a warm light for reading"] * 4)
    assert from_frames(inter, long).text_warnings() == []
    assert "no item has text" in from_frames(inter).text_warnings()[0]


def test_negative_ratings_are_refused_unless_allowed_or_dropped(tmp_path: Path) -> None:
    text = "user_id,item_id,r\nu1,i1,5\nu1,i2,-1\n"
    err = error_of(tmp_path, interactions=text, rating_col="r")
    assert_where(err, "interactions.csv", 3, "r")
    assert "rating -1 is negative" in str(err) and "--allow-negative-ratings" in str(err)
    inter = write(tmp_path / "inter.csv", text)
    kept = from_files(inter, rating_col="r", allow_negative_ratings=True)
    assert sorted(kept.weights.tolist()) == [-1.0, 5.0]
    assert from_files(inter, rating_col="r", min_rating=1).n_interactions == 1
