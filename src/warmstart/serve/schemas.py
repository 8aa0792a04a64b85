"""Request and response bodies of the HTTP API: strict, so a typo in a field is an error, not a no-op.

Every input field is bounded (the limits below, also in the README) and checked the same way
whatever database is behind the service: a value the database could not store (a NUL character,
a non-finite number) is a 422 naming the field, never a 500. Types are strict: `"k": true` or
`"explain": 0` are errors, not 1 and False.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 20_000
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 1_000
MAX_PATH_CHARS = 4_096
MAX_K = 1000
MAX_ITEM_IDS = 1000  # items a visitor may name in one profile
_MAX_INT = 2**63 - 1


def _first_unprintable(value: str) -> str | None:
    """A description of the first character an id may not hold, or None when all are fine."""
    if value.isprintable():
        return None
    for j, ch in enumerate(value):
        if not ch.isprintable():
            kind = unicodedata.category(ch)
            return f"U+{ord(ch):04X} (category {kind}) at position {j}"
    return None  # pragma: no cover - isprintable() said otherwise


def _printable(value: str) -> str:
    """Ids and attribute names: no control, format (bidi, zero-width), separator or unassigned
    characters (`str.isprintable`), so an id cannot disguise itself in a log or on the page."""
    bad = _first_unprintable(value)
    if bad is not None:
        raise ValueError(f"may hold printable characters only, not {bad}")
    return value


def _id(value: str) -> str:
    if "/" in value:
        raise ValueError("may not contain '/': ids appear in URL paths")
    return _printable(value)


def _at_most(limit: int, stated: int | None = None) -> BeforeValidator:
    """A length check before any other: pydantic strips and checks a string's characters
    before its length, and stripping copies it (32 MiB for 8 MiB of text with one emoji).
    The error states `stated` characters (the limit after stripping) where given."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters",
                {"max_length": stated or limit},
            )
        return value

    return BeforeValidator(check)


def _no_nul(value: str) -> str:
    """Texts may hold any character but NUL, which PostgreSQL cannot store."""
    j = value.find("\x00")
    if j >= 0:
        raise ValueError(f"may not contain the NUL character (at position {j})")
    return value


# An id: 1 to 256 printable characters once stripped, and no "/" (it could not be addressed in
# a URL path such as /v1/items/{item_id}).
Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS),
    AfterValidator(_id),
    _at_most(MAX_ID_CHARS + 256, MAX_ID_CHARS),  # room for whitespace that is stripped
]
Text = Annotated[
    str,
    StringConstraints(max_length=MAX_TEXT_CHARS),
    AfterValidator(_no_nul),
    _at_most(MAX_TEXT_CHARS),
]
AttributeKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_KEY_CHARS),
    AfterValidator(_printable),
    _at_most(MAX_ATTRIBUTE_KEY_CHARS),
]
AttributeValue = (
    Annotated[
        str,
        StringConstraints(max_length=MAX_ATTRIBUTE_VALUE_CHARS),
        AfterValidator(_no_nul),
        _at_most(MAX_ATTRIBUTE_VALUE_CHARS),
    ]
    | bool
    | Annotated[int, Field(ge=-_MAX_INT, le=_MAX_INT)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | None
)
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)]
ModelPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PATH_CHARS),
    AfterValidator(_printable),
    _at_most(MAX_PATH_CHARS),
]
# An id in a URL path, checked as in bodies (422 naming the parameter).
PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_id)]
EventType = Literal["view", "click", "purchase", "rating"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    """Request bodies: unknown fields are errors and types are strict (no 1 for true)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ItemIn(_In):
    item_id: Id
    text: Text | None = None
    attributes: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_text(self) -> ItemIn:
        if not (self.text and self.text.strip()) and not self.attributes:
            raise ValueError("an item needs text or attributes: it is placed by what it says")
        return self


class ItemsIn(_In):
    items: list[ItemIn] = Field(min_length=1)


class ItemsOut(_Out):
    upserted: int
    created: list[str]
    updated: list[str]


class UserIn(_In):
    user_id: Id
    text: Text | None = None
    attributes: Attributes = Field(default_factory=dict)


class UsersIn(_In):
    users: list[UserIn] = Field(min_length=1)


class UsersOut(_Out):
    upserted: int


class UserOut(_Out):
    user_id: str
    text: str | None
    attributes: dict[str, Any]
    known_to_model: bool
    interactions: int  # training interactions plus events since


class EventIn(_In):
    event_id: Id | None = None
    user_id: Id
    item_id: Id
    type: EventType
    value: float | None = Field(default=None, allow_inf_nan=False)
    timestamp: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # unix seconds

    @model_validator(mode="after")
    def _rating_has_value(self) -> EventIn:
        if self.type == "rating" and self.value is None:
            raise ValueError("a rating event needs a value")
        return self


class EventsIn(_In):
    events: list[EventIn] = Field(min_length=1)


class EventsOut(_Out):
    accepted: int  # new events stored
    duplicates: int  # events whose event_id was already stored


class ItemOut(_Out):
    item_id: str
    title: str
    text: str  # the text the model encodes, cut to 2,000 characters ("" if none)


class Neighbour(_Out):
    item_id: Any
    title: str
    similarity: float


class ExplanationOut(_Out):
    summary: str
    neighbours: list[Neighbour]
    text_similarity: float | None
    notes: list[str]


class Recommendation(_Out):
    item_id: Any
    title: str  # the item's title, else the head of its text, else its id; one line, bounded
    score: float
    explanation: ExplanationOut | None = None


class ExperimentTag(_Out):
    experiment_id: str
    arm: str


class RecommendationsOut(_Out):
    user_id: str | None
    route: str
    recommendations: list[Recommendation]
    experiment: ExperimentTag | None = None


class ProfileIn(_In):
    text: Text | None = None
    attributes: Attributes = Field(default_factory=dict)
    item_ids: list[Id] = Field(default_factory=list, max_length=MAX_ITEM_IDS)
    k: int = Field(default=10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    explain: bool = True


class SimilarItem(_Out):
    item_id: Any
    title: str
    score: float


class SimilarOut(_Out):
    item_id: str
    items: list[SimilarItem]


class ReloadIn(_In):
    model: ModelPath | None = None


class ReloadOut(_Out):
    model: str
    items: int
    seconds: float


class ArmIn(_In):
    """One arm: a share of users, and what it changes (nothing: the control)."""

    name: Id
    weight: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    model: ModelPath | None = None
    neighbour_weight: float | None = Field(default=None, ge=0, le=1e3, allow_inf_nan=False)
    popularity_weight: float | None = Field(default=None, ge=0, le=1e3, allow_inf_nan=False)
    popularity_fade: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


class ExperimentIn(_In):
    experiment_id: Id
    arms: list[ArmIn] = Field(min_length=2, max_length=20)

    @model_validator(mode="after")
    def _distinct_names(self) -> ExperimentIn:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be distinct")
        return self


class ArmOut(_Out):
    name: str
    weight: float
    model: str | None = None
    neighbour_weight: float | None = None
    popularity_weight: float | None = None
    popularity_fade: float | None = None
    users: int  # users served by this arm
    impressions: int  # recommendation lists served
    items_shown: int
    clicks: int  # click and purchase events by those users since the start
    click_rate: float | None  # clicks / items shown


class ExperimentOut(_Out):
    experiment_id: str
    status: Literal["running", "stopped"]
    start_seq: int
    arms: list[ArmOut]


class Health(_Out):
    """Liveness: the process answers (it may still be loading the model)."""

    status: Literal["ok"]
    ready: bool


class Ready(_Out):
    """Readiness: whether requests can be served now."""

    status: Literal["ready", "loading", "failed"]
    model: str | None = None
    items: int | None = None
    detail: str | None = None
    worker: int | None = None  # the answering process's id (`serve --workers N` runs several)
    # What encodes visitors' and users' sentences (`--query-encoder`; items: the model's own)
    query_encoder: str | None = None


class ErrorOut(_Out):
    detail: Any


FIELD_NAMES: frozenset[str] = frozenset(
    name for model in _In.__subclasses__() for name in model.model_fields
)
"""Every request-body field name (a log line may show these, and nothing else a client chose)."""
