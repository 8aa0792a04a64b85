"""Read interaction, item and user tables from csv, tsv, parquet or jsonl into DataFrames.

Every frame returned remembers where its rows came from, so later errors can name the file, the
line and the column of a bad value:

* ``df.attrs["source"]``: the file path (str);
* ``df.attrs["line_offset"]``: add it to a 0-based row position to get the 1-based line
  (2 for csv/tsv, whose line 1 is the header; 1 for jsonl);
* ``df.attrs["lines"]``: a numpy array of exact line numbers, present only when rows and lines
  do not line up (quoted multi-line csv fields, blank lines in jsonl);
* ``df.attrs["row_unit"]``: "line" for text files, "row" for parquet (which has no lines:
  position i is reported as row i+1).

Id typing in csv/tsv: every column is read as text first, so nothing is mangled. A column whose
values are all canonical integers ("42", "-3"; not "007" or "+5") becomes int64 (nullable Int64
when it has blanks); a column of canonical numbers with a decimal point or exponent becomes
float64; everything else stays text, exactly as written ("007" stays "007"). Blank or
whitespace-only cells are missing. jsonl and parquet keep the types stored in the file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmstart.errors import DataError, DataNotFoundError

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")

_INT_RE = r"-?(?:0|[1-9][0-9]*)"
_FLOAT_RE = r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"


def read_table(path: str | Path, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a table by extension (.csv, .tsv, .parquet, .jsonl, .ndjson), keeping ids as written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"unsupported file type {path.suffix or '(no extension)'!r}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}",
            path=path,
        )
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file")
    if suffix == ".parquet":
        return _read_parquet(path)
    text = _decode(path, encoding, sep="\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(text, path)
    return _read_delimited(text, path, sep="\t" if suffix == ".tsv" else ",")


def row_lines(frame: pd.DataFrame) -> np.ndarray | None:
    """1-based source line (or parquet row) of every row of a frame from `read_table`, else None."""
    lines = frame.attrs.get("lines")
    if lines is not None:
        return np.asarray(lines, dtype=np.int64)
    offset = frame.attrs.get("line_offset")
    if offset is None:
        return None
    return np.arange(len(frame), dtype=np.int64) + int(offset)


def _mark(
    frame: pd.DataFrame, path: Path, offset: int, lines: np.ndarray | None, unit: str
) -> None:
    frame.attrs["source"] = str(path)
    frame.attrs["line_offset"] = offset
    frame.attrs["row_unit"] = unit
    if lines is not None:
        frame.attrs["lines"] = lines


def _decode(path: Path, encoding: str, sep: str) -> str:
    """Decode the whole file, turning a bad byte into an error that names its line (and column)."""
    data = path.read_bytes()
    try:
        return data.decode(
            "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        )
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = None
        if path.suffix.lower() in (".csv", ".tsv"):
            column = _column_at(data, line_start, exc.start, sep, encoding)
        raise DataError(
            f"cannot decode byte {data[exc.start : exc.start + 1]!r} as {encoding} "
            f"(byte offset {exc.start}); re-save the file as {encoding}",
            path=path,
            line=line,
            column=column,
        ) from None


def _column_at(data: bytes, line_start: int, offset: int, sep: str, encoding: str) -> str | None:
    """The header name of the field holding byte `offset` (best effort, for error messages)."""
    header_end = data.find(b"\n")
    header = data[: header_end if header_end >= 0 else len(data)].decode(encoding, errors="replace")
    names = next(csv.reader([header.lstrip("\ufeff").rstrip("\r")], delimiter=sep), [])
    before = data[line_start:offset].decode(encoding, errors="replace")
    fields = next(csv.reader([before], delimiter=sep), [""])
    pos = len(fields) - 1
    return names[pos] if 0 <= pos < len(names) and line_start > 0 else None


def _read_delimited(text: str, path: Path, sep: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            "file is empty; expected a header line naming the columns", path=path
        ) from None
    except pd.errors.ParserError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise DataError(
            f"cannot parse as {'tsv' if sep == chr(9) else 'csv'}: {exc}",
            path=path,
            line=int(found.group(1)) if found else None,
        ) from None
    lines: np.ndarray | None = None
    if _has_multiline(frame, text):
        lines = _record_lines(text, sep)[: len(frame)]
    stripped = {name: frame[name].str.strip() for name in frame.columns}
    missing = {name: (col == "").to_numpy() for name, col in stripped.items()}
    # blank lines (e.g. trailing ones) would otherwise become rows of blanks
    blank = np.logical_and.reduce(list(missing.values())) if missing else np.zeros(0, bool)
    if len(frame.columns) > 1 and blank.any():
        base = lines if lines is not None else np.arange(len(frame), dtype=np.int64) + 2
        lines = base[~blank]
        frame = frame.loc[~blank].reset_index(drop=True)
        stripped = {name: col.loc[~blank].reset_index(drop=True) for name, col in stripped.items()}
        missing = {name: m[~blank] for name, m in missing.items()}
    out = pd.DataFrame(
        {name: _infer(frame[name], stripped[name], missing[name]) for name in frame.columns},
        index=frame.index,
    )
    _mark(out, path, 2, lines, "line")
    return out


def _has_multiline(frame: pd.DataFrame, text: str) -> bool:
    """Whether rows and lines differ (quoted fields with newlines), needing exact line numbers."""
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    return n_lines != len(frame) + 1


def _record_lines(text: str, sep: str) -> np.ndarray:
    """Start line of every data record, with the csv module (slow path, multi-line fields only)."""
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    starts: list[int] = []
    prev_end = 0
    for i, _ in enumerate(reader):
        if i > 0:
            starts.append(prev_end + 1)
        prev_end = reader.line_num
    return np.asarray(starts, dtype=np.int64)


def _infer(column: pd.Series, stripped: pd.Series, missing: np.ndarray) -> pd.Series:
    """Text column -> int64 / Int64 / float64 when every value is a canonical number, else text."""
    present = stripped[~missing]
    if present.empty:
        return pd.Series([None] * len(column), index=column.index, dtype=object)
    if bool(present.str.fullmatch(_INT_RE).all()):
        if not missing.any():
            return present.astype(np.int64)
        return present.astype(np.int64).reindex(column.index).astype("Int64")
    if bool(present.str.fullmatch(_FLOAT_RE).all()):
        return present.astype(np.float64).reindex(column.index)
    if missing.any():
        return column.where(~missing, None)
    return column


def _read_jsonl(text: str, path: Path) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    decoder = json.JSONDecoder()
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = decoder.decode(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"malformed JSON at character {exc.colno}: {exc.msg}", path=path, line=number
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"expected a JSON object per line, got {type(record).__name__}",
                path=path,
                line=number,
            )
        records.append(record)
        lines.append(number)
    if not records:
        raise DataError("file is empty; expected one JSON object per line", path=path)
    frame = pd.DataFrame.from_records(records)
    line_array = np.asarray(lines, dtype=np.int64)
    regular = bool(np.array_equal(line_array, np.arange(1, len(lines) + 1)))
    _mark(frame, path, 1, None if regular else line_array, "line")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types; all mean "not a readable parquet file"
        raise DataError(f"cannot read parquet file: {exc}", path=path) from None
    frame = frame.reset_index(drop=isinstance(frame.index, pd.RangeIndex))
    _mark(frame, path, 1, None, "row")
    return frame
