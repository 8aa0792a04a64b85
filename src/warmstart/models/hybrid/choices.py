"""What a fit chose and why: the records `fit` reports and the model saves, and the one rule for
growing a grid whose best value sits on its edge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self


def extend_once(grid: Sequence[float], best: float, *, upper: bool) -> tuple[float, ...]:
    """Values beyond a grid's edge when `best` sits on it: ×2 and ×4 past the top edge, ÷2 and
    ÷4 past a positive bottom edge (`upper=False`); nothing otherwise (0 is a real choice)."""
    if len(grid) < 2:
        return ()
    if upper and best == max(grid) and best > 0:
        return (2.0 * best, 4.0 * best)
    if not upper and best == min(grid) and best > 0:
        return (best / 2.0, best / 4.0)
    return ()


class Choice:
    """What the fit's reported choices share: a JSON round trip (saved with the model) and the
    note on grid edges."""

    at_grid_edge: tuple[str, ...]

    def _edges(self) -> str:
        edges = ", ".join(self.at_grid_edge)
        return f"; at the edge of its grid: {edges}" if edges else ""

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "at_grid_edge": list(self.at_grid_edge)})

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        return cls(**cls._decode({**data, "at_grid_edge": tuple(data["at_grid_edge"])}))

    @classmethod
    def _decode(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data


@dataclass(frozen=True)
class ColdUserChoice(Choice):
    """What the cold-user blend was chosen on, and how it did there.

    `ndcg` is the mean NDCG@k over held-out users served with nothing and with each number of
    revealed items (keys: revealed count); `responsiveness` is the share of their top 10, after
    `responsiveness_events` events, that their events brought in: items absent from the top 10
    they got before any event (the revealed items excluded from both).
    """

    neighbour_weight: float
    popularity_weight: float
    popularity_fade: float
    ndcg: dict[int, float]
    responsiveness: float | None
    min_responsiveness: float
    users: int
    at_grid_edge: tuple[str, ...] = ()

    def summary(self) -> str:
        ndcg = ", ".join(f"{v:.4f} (n={n})" for n, v in self.ndcg.items())
        resp = "n/a" if self.responsiveness is None else f"{self.responsiveness:.2f}"
        text = (
            f"neighbour_weight={self.neighbour_weight:g} popularity_weight="
            f"{self.popularity_weight:g} popularity_fade={self.popularity_fade:g}; on "
            f"{self.users} held-out users NDCG {ndcg}; responsiveness {resp} (at least "
            f"{self.min_responsiveness:g})"
        )
        return text + self._edges()

    @classmethod
    def _decode(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "ndcg": {int(n): float(v) for n, v in data["ndcg"].items()}}


@dataclass(frozen=True)
class CFChoice(Choice):
    """The collaborative filtering settings chosen on the held-out slice, and how they did."""

    algorithm: str
    factors: int
    regularization: float
    alpha: float
    ndcg: float  # NDCG@k of the factors alone on the held-out slice
    ndcg_default: float  # the same with the default settings
    fits: int
    seconds: float
    stopped_by_budget: bool = False
    at_grid_edge: tuple[str, ...] = ()

    def summary(self) -> str:
        text = (
            f"{self.algorithm} factors={self.factors} regularization={self.regularization:g} "
            f"alpha={self.alpha:g}; NDCG of the factors alone on the held-out slice "
            f"{self.ndcg:.4f} (defaults {self.ndcg_default:.4f}); {self.fits} fits in "
            f"{self.seconds:g} s"
        )
        if self.stopped_by_budget:
            text += " (stopped by the time budget: cf_search_seconds)"
        return text + self._edges()


@dataclass(frozen=True)
class WarmUserChoice(Choice):
    """The warm users' blend weights and the held-out NDCG@k with them and without them."""

    neighbour_weight: float
    popularity_weight: float
    new_item_boost: float
    ndcg: float  # held-out interactions with warm items, with the terms (no boost)
    ndcg_without: float  # the same without the terms
    ndcg_boosted: float  # the same with the terms and the boost
    ndcg_new: float  # interactions with the items held out entirely, ranked among all items
    ndcg_new_without: float  # the same without the boost
    users: int
    at_grid_edge: tuple[str, ...] = ()

    def summary(self) -> str:
        text = (
            f"warm_neighbour_weight={self.neighbour_weight:g} warm_popularity_weight="
            f"{self.popularity_weight:g} new_item_boost={self.new_item_boost:g}; on "
            f"{self.users} users' held-out interactions NDCG {self.ndcg:.4f} (without the "
            f"terms {self.ndcg_without:.4f}, with the boost {self.ndcg_boosted:.4f}); held-out "
            f"new items among all {self.ndcg_new:.4f} (without the boost "
            f"{self.ndcg_new_without:.4f})"
        )
        return text + self._edges()
