"""A small deterministic dataset with a known answer, for model tests.

Three taste groups (space, romance, cooking), each with its own vocabulary. Items are described
with their group's words plus shared filler words; users interact only with items of their own
group, and some users have a bio written in their group's words. So a model that learns anything
must recommend a user items of the user's own group, and a text-aware model must place items and
users that have text but no interactions in the right group.

Ids: items have string ids ("item-007"), users integer ids (1000, 1001, ...), so both kinds of
external id are exercised. Table rows are shuffled so that groups do not follow id order.

    data = make_synthetic()
    data.dataset                   # the Dataset (built with warmstart.data.from_frames)
    data.item_group["item-007"]    # -> 0, 1 or 2
    data.warm_users_of(0)          # user ids of group 0 with interactions
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from warmstart.data import Dataset, from_frames

GROUPS: tuple[str, ...] = ("space", "romance", "cooking")

# A small, fast ALS for models fitted on this data (one thread, fixed seed: the same every run).
CF: dict[str, Any] = {
    "factors": 16,
    "iterations": 15,
    "regularization": 0.05,
    "num_threads": 1,
    "seed": 0,
}


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


VOCAB: dict[str, tuple[str, ...]] = {
    "space": _words(
        "rocket galaxy orbit astronaut planet nebula starship comet alien cosmos asteroid "
        "telescope lunar gravity spacecraft"
    ),
    "romance": _words(
        "love kiss heart wedding passion romance darling sweetheart valentine affair couple "
        "bride embrace flirt longing"
    ),
    "cooking": _words(
        "recipe kitchen oven bake flour sauce garlic chef spice dough simmer roast butter "
        "pastry skillet"
    ),
}
FILLER: tuple[str, ...] = _words("story new great classic edition collection about with best")

N_WARM_ITEMS = 20  # per group
N_COLD_ITEMS = 3  # per group: text, no interactions
N_WARM_USERS = 30  # per group
N_COLD_USERS = 2  # per group: in the users table with a bio, no interactions
HISTORY = (5, 8)  # each warm user interacts with 5..8 items of their own group


@dataclass(frozen=True)
class Synthetic:
    dataset: Dataset
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    item_group: dict[Any, int]  # external item id -> group index
    user_group: dict[Any, int]  # external user id -> group index
    cold_item_ids: frozenset[Any]  # items with text and no interactions
    cold_user_ids: frozenset[Any]  # users in the users table with no interactions

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    def items_of(self, group: int, *, cold: bool | None = None) -> list[Any]:
        """Item ids of `group` in table order; cold=True/False keeps only cold/warm ones."""
        return [
            i
            for i, g in self.item_group.items()
            if g == group and (cold is None or (i in self.cold_item_ids) == cold)
        ]

    def warm_users_of(self, group: int) -> list[Any]:
        return [u for u, g in self.user_group.items() if g == group and u not in self.cold_user_ids]

    def cold_users_of(self, group: int) -> list[Any]:
        return [u for u, g in self.user_group.items() if g == group and u in self.cold_user_ids]

    @property
    def warm_users(self) -> list[Any]:
        return [u for u in self.user_group if u not in self.cold_user_ids]

    def history(self, user: Any) -> set[Any]:
        """External ids of the items `user` interacted with."""
        rows = self.interactions[self.interactions["user_id"] == user]
        return set(rows["item_id"])

    def group_text(self, group: int, n_words: int = 6, seed: int = 0) -> str:
        """A fresh description in `group`'s vocabulary (for visitors and new items)."""
        rng = np.random.default_rng([seed, group, 99])
        words = rng.choice(VOCAB[GROUPS[group]], size=n_words, replace=False)
        return " ".join(words)

    def group_share(self, item_ids: Any, group: int) -> float:
        """Fraction of the (non-padded) ids that belong to `group`."""
        ids = [i for i in item_ids if i is not None]
        return sum(self.item_group[i] == group for i in ids) / max(len(ids), 1)


def make_synthetic(seed: int = 0) -> Synthetic:
    rng = np.random.default_rng(seed)

    # ---- items: per group, warm then cold; then shuffled into one table --------------------
    item_rows: list[tuple[int, bool, str, str]] = []  # (group, cold, title, text)
    for g, name in enumerate(GROUPS):
        vocab = VOCAB[name]
        for j in range(N_WARM_ITEMS + N_COLD_ITEMS):
            title = " ".join(w.capitalize() for w in rng.choice(vocab, size=2, replace=False))
            words = [*rng.choice(vocab, size=7, replace=False), *rng.choice(FILLER, size=3)]
            rng.shuffle(words)
            item_rows.append((g, j >= N_WARM_ITEMS, title, " ".join(words)))
    order = rng.permutation(len(item_rows))
    item_rows = [item_rows[i] for i in order]
    item_ids = [f"item-{i:03d}" for i in range(len(item_rows))]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [r[2] for r in item_rows],
            "text": [r[3] for r in item_rows],
        }
    )
    item_group = {iid: r[0] for iid, r in zip(item_ids, item_rows, strict=True)}
    cold_items = frozenset(iid for iid, r in zip(item_ids, item_rows, strict=True) if r[1])

    # ---- users: warm users with optional bio, cold users with a bio -----------------------
    user_rows: list[tuple[int, bool, str | None]] = []  # (group, cold, bio)
    for g, name in enumerate(GROUPS):
        vocab = VOCAB[name]
        for j in range(N_WARM_USERS + N_COLD_USERS):
            cold = j >= N_WARM_USERS
            has_bio = cold or j % 2 == 0
            bio = (
                "I enjoy " + " ".join(rng.choice(vocab, size=4, replace=False)) if has_bio else None
            )
            user_rows.append((g, cold, bio))
    order = rng.permutation(len(user_rows))
    user_rows = [user_rows[i] for i in order]
    user_ids = [1000 + i for i in range(len(user_rows))]
    users = pd.DataFrame({"user_id": user_ids, "bio": [r[2] for r in user_rows]})
    user_group = {uid: r[0] for uid, r in zip(user_ids, user_rows, strict=True)}
    cold_users = frozenset(uid for uid, r in zip(user_ids, user_rows, strict=True) if r[1])

    # ---- interactions: own group's warm items only ----------------------------------------
    warm_by_group = {
        g: [i for i in item_ids if item_group[i] == g and i not in cold_items]
        for g in range(len(GROUPS))
    }
    rows: list[tuple[int, str, float]] = []
    for uid in user_ids:
        if uid in cold_users:
            continue
        pool = warm_by_group[user_group[uid]]
        n = int(rng.integers(HISTORY[0], HISTORY[1] + 1))
        for iid in rng.choice(pool, size=n, replace=False):
            rows.append((uid, str(iid), float(rng.integers(3, 6))))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])

    dataset = from_frames(
        interactions,
        items,
        users,
        user_col="user_id",
        item_col="item_id",
        rating_col="rating",
        item_text="{title}. {text}",
        user_text="{bio}",
        name="synthetic",
    )
    return Synthetic(
        dataset=dataset,
        interactions=interactions,
        items=items,
        users=users,
        item_group=item_group,
        user_group=user_group,
        cold_item_ids=cold_items,
        cold_user_ids=cold_users,
    )


WORDS = [
    "harbor",
    "lantern",
    "velvet",
    "orbit",
    "meadow",
    "copper",
    "thistle",
    "glacier",
    "saddle",
    "prism",
    "quarry",
    "ember",
    "willow",
    "falcon",
    "marble",
    "tundra",
    "violin",
    "cactus",
    "beacon",
    "orchid",
]


def make_clustered(seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """40 items in 4 taste clusters whose texts carry no hint of the cluster; 80 users.

    Each user picks 6 items of one cluster, so only the interactions say which items go together.
    """
    rng = np.random.default_rng(seed)
    n_items, n_clusters = 40, 4
    cluster = np.arange(n_items) % n_clusters
    texts = [" ".join(rng.choice(WORDS, size=3, replace=False)) for _ in range(n_items)]
    items = pd.DataFrame({"item_id": range(n_items), "text": texts})
    rows = []
    for u in range(80):
        pool = np.flatnonzero(cluster == u % n_clusters)
        rows += [(u, int(i)) for i in rng.choice(pool, size=6, replace=False)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"])
    ds = from_frames(inter, items, None, user_col="user_id", item_col="item_id", item_text="{text}")
    return ds, cluster[ds.item_ids.to_external(np.arange(ds.n_items)).astype(int)]
