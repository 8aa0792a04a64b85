"""Request and response bodies of the HTTP API: strict, so a typo in a field is an error, not a no-op."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# An id: non-empty once stripped, short enough for an index, no control characters, and no
# "/" (it could not be addressed in a URL path such as /v1/items/{item_id}).
Id = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f/]+$"
    ),
]
Text = Annotated[str, StringConstraints(max_length=20_000)]
Attributes = dict[str, str | int | float | bool | None]
EventType = Literal["view", "click", "purchase", "rating"]

MAX_K = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ItemIn(_Strict):
    item_id: Id
    text: Text | None = None
    attributes: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_text(self) -> ItemIn:
        if not (self.text and self.text.strip()) and not self.attributes:
            raise ValueError("an item needs text or attributes: it is placed by what it says")
        return self


class ItemsIn(_Strict):
    items: list[ItemIn] = Field(min_length=1)


class ItemsOut(_Strict):
    upserted: int
    created: list[str]
    updated: list[str]


class UserIn(_Strict):
    user_id: Id
    text: Text | None = None
    attributes: Attributes = Field(default_factory=dict)


class UsersIn(_Strict):
    users: list[UserIn] = Field(min_length=1)


class UsersOut(_Strict):
    upserted: int


class UserOut(_Strict):
    user_id: str
    text: str | None
    attributes: dict[str, Any]
    known_to_model: bool
    interactions: int  # training interactions plus events since


class EventIn(_Strict):
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


class EventsIn(_Strict):
    events: list[EventIn] = Field(min_length=1)


class EventsOut(_Strict):
    accepted: int  # new events stored
    duplicates: int  # events whose event_id was already stored


class Neighbour(_Strict):
    item_id: Any
    title: str
    similarity: float


class ExplanationOut(_Strict):
    summary: str
    neighbours: list[Neighbour]
    text_similarity: float | None
    notes: list[str]


class Recommendation(_Strict):
    item_id: Any
    score: float
    explanation: ExplanationOut | None = None


class ExperimentTag(_Strict):
    experiment_id: str
    arm: str


class RecommendationsOut(_Strict):
    user_id: str | None
    route: str
    recommendations: list[Recommendation]
    experiment: ExperimentTag | None = None


class ProfileIn(_Strict):
    text: Text | None = None
    attributes: Attributes = Field(default_factory=dict)
    item_ids: list[Id] = Field(default_factory=list, max_length=1000)
    k: int = Field(default=10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    explain: bool = True


class SimilarItem(_Strict):
    item_id: Any
    score: float


class SimilarOut(_Strict):
    item_id: str
    items: list[SimilarItem]


class ReloadIn(_Strict):
    model: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None


class ReloadOut(_Strict):
    model: str
    items: int
    seconds: float


class ArmIn(_Strict):
    """One arm: a share of users, and what it changes (nothing: the control)."""

    name: Id
    weight: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    model: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    neighbour_weight: float | None = Field(default=None, ge=0, le=1e3, allow_inf_nan=False)
    popularity_weight: float | None = Field(default=None, ge=0, le=1e3, allow_inf_nan=False)


class ExperimentIn(_Strict):
    experiment_id: Id
    arms: list[ArmIn] = Field(min_length=2, max_length=20)

    @model_validator(mode="after")
    def _distinct_names(self) -> ExperimentIn:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be distinct")
        return self


class ArmOut(_Strict):
    name: str
    weight: float
    model: str | None = None
    neighbour_weight: float | None = None
    popularity_weight: float | None = None
    users: int  # users served by this arm
    impressions: int  # recommendation lists served
    items_shown: int
    clicks: int  # click and purchase events by those users since the start
    click_rate: float | None  # clicks / items shown


class ExperimentOut(_Strict):
    experiment_id: str
    status: Literal["running", "stopped"]
    start_seq: int
    arms: list[ArmOut]


class Health(_Strict):
    status: Literal["ok"]
    items: int
    model: str


class ErrorOut(_Strict):
    detail: Any
