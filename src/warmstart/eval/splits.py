"""Evaluation protocols: which interactions a model trains on, and which users it is tested on.

A `Split` holds the training `Dataset` (same users and items as the full data, fewer
interactions, so held-out users and items keep their text) and the test `Segment`s. Each protocol
also sets aside a validation part, disjoint from the test part, that is never evaluated: cold
items, cold users or interactions that models may not train on, so that the test part is used
exactly once. Models choose their own hyper-parameters on slices of the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from warmstart.data.dataset import Dataset
from warmstart.errors import ConfigError, DataError, DataNotFoundError

PROTOCOLS: tuple[str, ...] = ("cold-item", "cold-user", "warm", "temporal")


@dataclass(frozen=True)
class Segment:
    """One group of test users and what counts as a hit for each of them.

    `truth` rows align with `users`; ranking is over `candidates` (all items when None) minus
    `exclude` (the user's own training or revealed items). `revealed` is set for cold users: the
    items (possibly none) the user is described by, together with their own text, at request time.
    """

    name: str
    users: np.ndarray
    truth: sp.csr_matrix
    exclude: sp.csr_matrix
    candidates: np.ndarray | None = None
    revealed: tuple[np.ndarray, ...] | None = None

    @property
    def n_users(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Split:
    protocol: str
    train: Dataset
    segments: tuple[Segment, ...]
    notes: tuple[str, ...] = ()


def _pairs(dataset: Dataset, mask: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(
        (np.ones(int(mask.sum()), np.float32), (dataset.users[mask], dataset.items[mask])),
        shape=(dataset.n_users, dataset.n_items),
    )


def _segment(
    name: str,
    dataset: Dataset,
    test: np.ndarray,
    exclude: sp.csr_matrix,
    candidates: np.ndarray | None = None,
) -> Segment:
    truth_all = _pairs(dataset, test)
    if candidates is not None:
        keep = np.zeros(dataset.n_items, dtype=np.float32)
        keep[candidates] = 1.0
        truth_all = (truth_all @ sp.diags(keep)).tocsr()
        truth_all.eliminate_zeros()
    users = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    return Segment(
        name=name,
        users=users,
        truth=truth_all[users].tocsr(),
        exclude=exclude[users].tocsr(),
        candidates=candidates,
    )


def cold_item_split(
    dataset: Dataset,
    *,
    test_items: np.ndarray | None = None,
    validation_items: np.ndarray | None = None,
    fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Items held out entirely. Segment `cold` ranks among the test items, `all` among every item.

    Without `test_items`, `fraction` of the items that have interactions are drawn at random;
    without `validation_items`, `validation_fraction` of the remaining ones are held out too.
    """
    rng = np.random.default_rng(seed)
    active = np.flatnonzero(dataset.item_counts() > 0)
    if test_items is None:
        n_test = max(1, round(fraction * len(active)))
        test_items = rng.choice(active, size=n_test, replace=False)
    test_items = np.unique(np.asarray(test_items, dtype=np.int64))
    if validation_items is None:
        rest = np.setdiff1d(active, test_items)
        n_val = round(validation_fraction * len(rest))
        validation_items = rng.choice(rest, size=n_val, replace=False)
    validation_items = np.setdiff1d(np.asarray(validation_items, dtype=np.int64), test_items)
    is_test = np.isin(dataset.items, test_items)
    is_val = np.isin(dataset.items, validation_items)
    train = dataset.with_interactions(~is_test & ~is_val)
    exclude = _pairs(dataset, ~is_test & ~is_val)
    if not is_test.any():
        raise DataError("the cold items have no interactions to test on")
    segments = (
        _segment("cold", dataset, is_test, exclude, candidates=test_items),
        _segment("all", dataset, is_test, exclude),
    )
    notes = (
        f"{len(test_items)} test items, {len(validation_items)} validation items held out",
        f"{int((~is_test & ~is_val).sum())} training interactions",
    )
    return Split("cold-item", train, segments, notes)


def _earliest_first(dataset: Dataset, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Interaction positions of one user ordered by time (random order without timestamps)."""
    if dataset.timestamps is None:
        return rng.permutation(rows)
    return rows[np.argsort(dataset.timestamps[rows], kind="stable")]


def cold_user_split(
    dataset: Dataset,
    *,
    fewshot: Sequence[int] = (0, 1, 3, 5),
    fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Users held out entirely; `fewshot-N` reveals their N earliest items and tests on the rest.

    Segment `zero-shot` (N = 0) has only the user's own text or attributes. A user is in segment
    N when they have more than N interactions, so there is something left to find.
    """
    rng = np.random.default_rng(seed)
    active = np.flatnonzero(dataset.user_counts() > 0)
    n_test = max(1, round(fraction * len(active)))
    test_users = np.sort(rng.choice(active, size=n_test, replace=False))
    rest = np.setdiff1d(active, test_users)
    val_users = rng.choice(rest, size=round(validation_fraction * len(rest)), replace=False)
    is_test = np.isin(dataset.users, test_users)
    is_val = np.isin(dataset.users, val_users)
    train = dataset.with_interactions(~is_test & ~is_val)

    order = np.argsort(dataset.users, kind="stable")
    bounds = np.searchsorted(dataset.users[order], [test_users, test_users + 1])
    history = {
        int(u): _earliest_first(dataset, order[a:b], rng)
        for u, a, b in zip(test_users, bounds[0], bounds[1], strict=True)
    }
    segments = []
    for n in sorted(set(fewshot)):
        if n < 0:
            raise ConfigError(f"--fewshot values must be >= 0, got {n}")
        users = np.array([u for u in test_users if len(history[int(u)]) > n], dtype=np.int64)
        if users.size == 0:
            continue
        revealed = tuple(dataset.items[history[int(u)][:n]].astype(np.int64) for u in users)
        hidden = np.concatenate([history[int(u)][n:] for u in users])
        mask = np.zeros(dataset.n_interactions, dtype=bool)
        mask[hidden] = True
        truth = _pairs(dataset, mask)[users].tocsr()
        rows = np.repeat(np.arange(len(users)), [len(r) for r in revealed])
        exclude = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, np.concatenate(revealed))),
            shape=(len(users), dataset.n_items),
        )
        name = "zero-shot" if n == 0 else f"fewshot-{n}"
        segments.append(Segment(name, users, truth, exclude, None, revealed))
    notes = (f"{len(test_users)} test users, {len(val_users)} validation users held out",)
    return Split("cold-user", train, tuple(segments), notes)


def warm_split(dataset: Dataset, *, seed: int = 0, temporal: bool = False) -> Split:
    """80/10/10 of the interactions, at random or (temporal) by global time."""
    n = dataset.n_interactions
    if temporal:
        if dataset.timestamps is None:
            raise DataError("the temporal protocol needs timestamps (--timestamp-col)")
        rank = np.empty(n, dtype=np.float64)
        rank[np.argsort(dataset.timestamps, kind="stable")] = np.arange(n) / max(n, 1)
    else:
        rank = np.random.default_rng(seed).random(n)
    is_train, is_test = rank < 0.8, rank >= 0.9
    train = dataset.with_interactions(is_train)
    known = _pairs(dataset, ~is_test)  # training and validation interactions are not news
    name = "temporal" if temporal else "warm"
    warm_items = train.item_counts() > 0
    warm_users = train.user_counts() > 0
    # Only users and items the model has seen: the warm protocol measures warm quality.
    test = is_test & warm_items[dataset.items] & warm_users[dataset.users]
    segment = _segment(name, dataset, test, known)
    notes = (f"{int(is_train.sum())} training, {int(test.sum())} test interactions",)
    return Split(name, train, (segment,), notes)


def read_id_file(path: Path, dataset: Dataset) -> np.ndarray:
    """Internal ids of the item ids listed one per line in `path` (blank lines ignored)."""
    ids: list[str] = []
    lines: list[int] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    ids.append(line.strip())
                    lines.append(number)
    except FileNotFoundError:
        raise DataNotFoundError(f"{path}: no such file") from None
    if not ids:
        raise DataError("no item ids in the file", path=path)
    internal = dataset.item_ids.lookup(ids)
    missing = np.flatnonzero(internal < 0)
    if missing.size:
        j = int(missing[0])
        raise DataError(
            f"unknown item id {ids[j]!r} ({missing.size} unknown in all)", path=path, line=lines[j]
        )
    return np.asarray(internal, dtype=np.int64)


def dropoutnet_items(frames: dict[str, pd.DataFrame], dataset: Dataset) -> dict[str, np.ndarray]:
    """Internal ids of the validation and test items of the CiteULike DropoutNet split."""
    out: dict[str, np.ndarray] = {}
    for part in ("vali", "test"):
        internal = dataset.item_ids.lookup(frames[part]["iid"].unique().tolist())
        if (internal < 0).any():
            raise DataError(f"the dropoutnet {part} split names items the dataset lacks")
        out[part] = np.asarray(internal, dtype=np.int64)
    return out
