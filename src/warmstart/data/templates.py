"""Text templates: a row of attributes becomes one sentence, with missing fields left out cleanly.

A language model embeds whatever string it is given, so "nan", "None" or a dangling "-year-old"
would become part of an entity's meaning. `TextTemplate` renders only the fields that have a value
and drops the literal text that belongs to a missing field.

Which literal text belongs to which field:

* literal text between two fields belongs to the field it *precedes* (", " in "{a}, {b}" is
  dropped with b), so a separator never dangles;
* but text glued to a field without a space ("-year-old" in "{age}-year-old", "(" and ")" in
  "({year})") belongs to that field and goes with it; sentence punctuation (. , ; : ! ?) next
  to such glued text is a separator and stays with the next field;
* text before the first field and after the last one frames the whole sentence and is kept
  whenever any field has a value, e.g. the final "." of "{title}. {plot}.".

Values: whole floats render without ".0", lists (and "|"-joined strings under the spec
``{genres:list}``) render joined with ", ", other format specs work as in `str.format`.

So "{title}. {plot}" renders "Toy Story (1995)" without a plot (no trailing period) and
"Toy Story (1995). A boy..." with one.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from warmstart.errors import DataError

LIST_SPEC = "list"
_SEPARATORS = ".,;:!?"
_SPACES = re.compile(r"[ \t]{2,}")
_GLUED = re.compile(r"\S+")
_LEAD = re.compile(r"\S+$")


@dataclass(frozen=True)
class _Part:
    """One field with the literal text that is emitted only together with it."""

    field: str
    spec: str
    prefix: str  # separator before the value, emitted only if an earlier field was emitted
    lead: str  # glued before the value ("(" in " ({year}"), emitted with it
    suffix: str  # glued after the value ("-year-old"), emitted with it


def _split_glued(literal: str) -> tuple[str, str]:
    """Split literal text after a field into (glued to that field, separator before the next)."""
    glued = _GLUED.match(literal)
    core = glued.group(0).rstrip(_SEPARATORS) if glued else ""
    return core, literal[len(core) :]


def _split_lead(literal: str) -> tuple[str, str]:
    """Split literal text before a field into (separator, glued to the field, like "(")."""
    match = _LEAD.search(literal)
    lead = match.group(0).lstrip(_SEPARATORS) if match else ""
    return literal[: len(literal) - len(lead)], lead


def is_missing(value: Any) -> bool:
    """True for None, NaN, pd.NA, NaT, blank strings and empty lists: values a text must omit."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (float, np.floating)):
        return bool(math.isnan(value))
    if isinstance(value, (list, tuple, np.ndarray)):
        return all(is_missing(v) for v in value)
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_value(value: Any, spec: str = "") -> str | None:
    """Render one value as text; None when it is missing."""
    if type(value) is str and not spec:  # the common case, kept fast
        value = value.strip()
        return value or None
    if spec == LIST_SPEC and isinstance(value, str):
        value = value.split("|")
    if is_missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [format_value(v) for v in value]
        return ", ".join(p for p in parts if p is not None)
    if spec and spec != LIST_SPEC:
        try:
            return format(value, spec).strip() or None
        except (TypeError, ValueError) as exc:
            raise DataError(f"cannot format {value!r} with format spec {spec!r}: {exc}") from None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


class TextTemplate:
    """A `str.format`-style template over named columns, e.g. "{title}. {plot}"."""

    def __init__(self, template: str) -> None:
        self.template = template
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise DataError(f"invalid text template {template!r}: {exc}") from exc
        literals: list[str] = []
        fields: list[tuple[str, str]] = []
        for literal, field, spec, conversion in parsed:
            literals.append(literal)
            if field is None:
                continue
            if not field or field.isdigit():
                raise DataError(
                    f"text template {template!r} has a positional field {{{field}}}; "
                    "name a column instead, e.g. {title}"
                )
            if conversion:
                raise DataError(
                    f"text template {template!r}: conversions like !{conversion} are not supported"
                )
            fields.append((field, spec or ""))
        if len(literals) == len(fields):  # template ends with a field
            literals.append("")
        self.head = literals[0]
        parts: list[_Part] = []
        prefix = ""
        for k, (field, spec) in enumerate(fields):
            glued, rest = _split_glued(literals[k + 1])
            separator, lead = _split_lead(prefix) if k else ("", "")
            parts.append(_Part(field, spec, separator, lead, glued))
            prefix = rest
        self.tail = prefix
        self._parts = tuple(parts)

    @property
    def fields(self) -> tuple[str, ...]:
        """The column names the template uses, in order of first use."""
        return tuple(dict.fromkeys(p.field for p in self._parts))

    def __repr__(self) -> str:
        return f"TextTemplate({self.template!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTemplate) and other.template == self.template

    def __hash__(self) -> int:
        return hash(self.template)

    def check_columns(self, columns: Iterable[Any], *, path: str | None = None) -> None:
        """Raise DataError naming a field missing from `columns`, listing the columns that exist."""
        available = [str(c) for c in columns]
        for field in self.fields:
            if field not in available:
                raise DataError(
                    f"text template {self.template!r} uses unknown field {field!r}; "
                    f"available columns: {', '.join(available) or '(none)'}",
                    path=path,
                    column=field,
                )

    def render(self, row: Mapping[str, Any]) -> str | None:
        """The text for one row, or None when every field is missing."""
        out = ""
        for part in self._parts:
            try:
                value = row[part.field]
            except KeyError:
                self.check_columns(row.keys())
                raise
            text = format_value(value, part.spec)
            if text is None:
                continue
            if out:
                out = _join(out, part.prefix)
            out += part.lead + text + part.suffix
        if not out:
            return None
        out = self.head + _join(out, self.tail)
        return _SPACES.sub(" ", out).strip() or None

    def render_frame(self, frame: pd.DataFrame) -> list[str | None]:
        """Render every row of `frame` (fast path for tables: no per-row dict building)."""
        self.check_columns(frame.columns)
        if frame.empty:
            return []
        columns = [frame[f].tolist() for f in self.fields]
        names = self.fields
        return [
            self.render(dict(zip(names, values, strict=True)))
            for values in zip(*columns, strict=True)
        ]


def _join(text: str, separator: str) -> str:
    """Append a separator, without doubling sentence punctuation the value already ends with."""
    if (
        separator
        and text
        and separator[0] in _SEPARATORS
        and (separator[0] == text[-1] or (separator[0] == "." and text[-1] in "!?"))
    ):
        separator = separator[1:]
    return text + separator


LABEL_CHARS = 80


def short_label(text: str, limit: int = LABEL_CHARS) -> str:
    """A title or text on one line, cut to `limit` characters (ending "...") when longer.

    Every title a model or the service shows goes through here, so a response that repeats
    titles (explanations name the items they resemble) stays bounded whatever an item's title.
    Only the head of a long text is read.
    """
    head = text[: 4 * limit]
    words = " ".join(head.split())
    if len(words) <= limit and len(head) == len(text):
        return words
    return words[: limit - 3].rstrip() + "..."


def render_attributes(template: str | None, attributes: Mapping[str, Any] | None) -> str | None:
    """Attributes as text, one policy for the library and the service: with the data's template
    where there is one (fields it names but the attributes lack are left out), else, or where
    the template renders nothing, the non-empty `key: value` pairs joined by ". "."""
    if not attributes:
        return None
    if template:
        tpl = TextTemplate(template)
        text = tpl.render({**dict.fromkeys(tpl.fields), **attributes})
        if text:
            return text
    parts = [f"{k}: {v}" for k, v in attributes.items() if v is not None and str(v).strip()]
    return ". ".join(parts) or None


def title_of(attributes: Mapping[str, Any] | None, text: str) -> str:
    """An item's title: its non-blank `title` attribute, else its text (`short_label` cuts it)."""
    title = attributes.get("title") if attributes else None
    return str(title) if title is not None and str(title).strip() else text
