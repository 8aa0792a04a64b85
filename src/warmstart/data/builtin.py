"""Loaders for the built-in benchmark datasets, read from a local data folder (never downloaded).

The data cannot ship with the package (MovieLens forbids redistribution), so the loaders look
for a folder holding ``ml-100k/`` and ``citeulike-a/``: see `resolve_data_dir`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from warmstart.data.build import from_frames
from warmstart.data.dataset import Dataset
from warmstart.errors import DataError, DataNotFoundError

# Small sparse versions, like a first dataset of one's own: a sample (users, items and
# interactions kept at these rates), then 5-core, items described by their title alone.
SPARSE_VARIANTS: dict[str, tuple[str, float, float, float]] = {
    "ml-100k-sparse": ("ml-100k", 1.0, 1.0, 0.1),
    # CiteULike-a is too sparse for a sample of interactions to keep a 5-core: sample people
    # and articles instead.
    "citeulike-a-sparse": ("citeulike-a", 0.5, 0.2, 1.0),
}
BUILTIN_DATASETS: tuple[str, ...] = ("ml-100k", "citeulike-a", *SPARSE_VARIANTS)
ENV_VAR = "WARMSTART_DATA"

ML100K_ITEM_TEMPLATE = "{title}. {genres:list}. {plot}"
ML100K_USER_TEMPLATE = "A {age}-year-old {gender}, occupation: {occupation}"
CITEULIKE_ITEM_TEMPLATE = "{title}. {abstract}"

_N_CITEULIKE_ITEMS = 16_980


def _default_candidates() -> list[Path]:
    """``shared/datasets`` beside the repository checkout, then beside the working directory."""
    repo_root = Path(__file__).resolve().parents[3]
    out = [repo_root.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    return list(dict.fromkeys(p.resolve() for p in out))


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding the built-in datasets.

    Order: `data_dir`, then $WARMSTART_DATA, then ``../shared/datasets`` beside the repository (or
    beside the working directory). A folder named explicitly (argument or variable) must exist:
    falling back to another folder would silently load other data than the user asked for.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(
                f"data folder {path} (given as data_dir / --data-dir) does not exist"
            )
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"data folder {path} (from ${ENV_VAR}) does not exist")
        return path
    looked = [
        "the data_dir argument / --data-dir (not given)",
        f"${ENV_VAR} (not set)",
    ]
    for candidate in _default_candidates():
        if candidate.is_dir():
            return candidate
        looked.append(str(candidate))
    raise DataNotFoundError(
        "cannot find the datasets folder. Looked in:\n  - "
        + "\n  - ".join(looked)
        + "\nPoint at the folder holding ml-100k and citeulike-a with --data-dir DIR "
        f"or by setting {ENV_VAR}=DIR."
    )


def load_builtin(
    name: str, data_dir: str | Path | None = None, *, include_tags: bool = False
) -> Dataset:
    """Load a built-in dataset by name ("ml-100k" or "citeulike-a") from the data folder.

    `include_tags` (citeulike-a only) adds the user-written tags as ``item_features["tags"]``;
    they are never part of the item text, because tags come from the users who bookmarked an
    article and so leak interactions into a cold item's description.
    """
    if name not in BUILTIN_DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}"
        )
    if name in SPARSE_VARIANTS:
        source, users, items, interactions = SPARSE_VARIANTS[name]
        full = load_builtin(source, data_dir)
        return sparse_sample(
            full,
            users=users,
            items=items,
            interactions=interactions,
            item_text="{title}",
            name=name,
        )
    root = resolve_data_dir(data_dir)
    folder = root / name
    if not folder.is_dir():
        raise DataNotFoundError(f"no {name}/ folder in {root}; expected {folder}")
    if name == "ml-100k":
        if include_tags:
            raise DataError("include_tags applies to citeulike-a only; ml-100k has no tags")
        return _load_ml100k(folder)
    return _load_citeulike(folder, include_tags=include_tags)


def sparse_sample(
    dataset: Dataset,
    *,
    users: float = 1.0,
    items: float = 1.0,
    interactions: float = 1.0,
    min_count: int = 5,
    item_text: str | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Dataset:
    """A smaller, sparser dataset: users, items and interactions each kept at the given rate
    (seeded), then the `min_count`-core (users and items with at least that many interactions,
    repeated until stable). Entities left without interactions are dropped; `item_text`
    re-renders item text from the item features (e.g. "{title}" for titles alone)."""
    rng = np.random.default_rng(seed)
    keep_user = rng.random(dataset.n_users) < users
    keep_item = rng.random(dataset.n_items) < items
    keep = keep_user[dataset.users] & keep_item[dataset.items]
    keep &= rng.random(dataset.n_interactions) < interactions
    while True:
        uc = np.bincount(dataset.users[keep], minlength=dataset.n_users)
        ic = np.bincount(dataset.items[keep], minlength=dataset.n_items)
        drop = keep & ((uc[dataset.users] < min_count) | (ic[dataset.items] < min_count))
        if not drop.any():
            break
        keep &= ~drop
    if not keep.any():
        raise DataError(f"no interactions are left in the {min_count}-core of the sample")
    u_ids = dataset.user_ids.to_external(dataset.users[keep])
    i_ids = dataset.item_ids.to_external(dataset.items[keep])
    frame = pd.DataFrame({"user_id": u_ids, "item_id": i_ids, "rating": dataset.weights[keep]})
    if dataset.timestamps is not None:
        frame["timestamp"] = dataset.timestamps[keep]
    kept_items = np.unique(dataset.items[keep])
    item_frame = dataset.item_features.iloc[kept_items].reset_index(drop=True)
    item_frame.insert(0, "item_id", dataset.item_ids.to_external(kept_items))
    user_frame = None
    if len(dataset.user_features.columns):
        kept_users = np.unique(dataset.users[keep])
        user_frame = dataset.user_features.iloc[kept_users].reset_index(drop=True)
        user_frame.insert(0, "user_id", dataset.user_ids.to_external(kept_users))
    return from_frames(
        frame,
        item_frame,
        user_frame,
        rating_col="rating" if dataset.has_ratings else None,
        timestamp_col="timestamp" if dataset.timestamps is not None else None,
        item_text=item_text or dataset.item_template,
        user_text=dataset.user_template if user_frame is not None else None,
        name=name or f"{dataset.name}-sample",
    )


def citeulike_dropoutnet_split(data_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The DropoutNet cold-item split of citeulike-a: "train", "vali", "test" -> (uid, iid) frames.

    Ids are 0-based and equal the external ids of ``load_builtin("citeulike-a")``; the item sets of
    the three parts are disjoint.
    """
    folder = resolve_data_dir(data_dir) / "citeulike-a" / "splits-dropoutnet-cold"
    out: dict[str, pd.DataFrame] = {}
    for part in ("train", "vali", "test"):
        path = _need(folder / f"{part}.csv")
        frame = pd.read_csv(path, dtype=np.int64)
        if list(frame.columns) != ["uid", "iid"]:
            raise DataError(f"expected columns uid,iid, found {','.join(frame.columns)}", path=path)
        out[part] = frame
    return out


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"missing data file {path}")
    return path


def _read_psv(path: Path, names: list[str], encoding: str, sep: str = "|") -> pd.DataFrame:
    """A headerless delimited file as text columns, rows tagged with their lines for errors."""
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=None,
            names=names,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding=encoding,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot parse: {exc}", path=path) from None
    frame.attrs.update(source=str(path), line_offset=1, row_unit="line")
    return frame


def _load_ml100k(folder: Path) -> Dataset:
    """MovieLens 100K: explicit 1-5 ratings with timestamps; movie and user side information.

    Features are stored text-ready, so rendering `item_template` / `user_template` over a features
    row gives exactly the stored text (and new entities given the same way render alike):
    genres "|"-joined without the "unknown" placeholder, gender as "man"/"woman", and no title for
    item 267, whose title is the placeholder "unknown".
    """
    genre_path = _need(folder / "u.genre")
    genre_names = [
        line.split("|")[0]
        for line in genre_path.read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    if len(genre_names) != 19:
        raise DataError(f"expected 19 genres, found {len(genre_names)}", path=genre_path)

    ratings = pd.read_csv(
        _need(folder / "u.data"),
        sep="\t",
        header=None,
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype=np.int64,
    )
    ratings.attrs.update(source=str(folder / "u.data"), line_offset=1, row_unit="line")

    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]
    raw = _read_psv(_need(folder / "u.item"), item_cols + genre_names, "latin-1")
    flags = raw[genre_names].to_numpy() == "1"
    # "unknown" (genre 0) means no genre is known, so it is left out of the genre list
    genres = [
        "|".join(g for g, on in zip(genre_names, row, strict=True) if on and g != "unknown") or None
        for row in flags
    ]
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"].astype(np.int64),
            # item 267 is a placeholder whose title is "unknown": no title, so no text
            "title": raw["title"].str.strip().replace("unknown", None),
            "genres": genres,
            "release_date": raw["release_date"].where(raw["release_date"] != "", None),
        }
    )
    plots = pd.read_csv(
        _need(folder / "u.item.plots.tsv"), sep="\t", dtype={"item_id": np.int64}, encoding="utf-8"
    )
    plot_by_id = plots.set_index("item_id")["plot"]
    items["plot"] = items["item_id"].map(plot_by_id)
    items["imdb_url"] = raw["imdb_url"].where(raw["imdb_url"] != "", None)
    items.attrs.update(source=str(folder / "u.item"), line_offset=1, row_unit="line")

    raw_users = _read_psv(
        _need(folder / "u.user"), ["user_id", "age", "gender", "occupation", "zip"], "latin-1"
    )
    genders = {"M": "man", "F": "woman"}
    users = pd.DataFrame(
        {
            "user_id": raw_users["user_id"].astype(np.int64),
            "age": raw_users["age"].astype(np.int64),
            "gender": raw_users["gender"].map(genders),
            "occupation": raw_users["occupation"],
            "zip": raw_users["zip"],
        }
    )
    users.attrs.update(source=str(folder / "u.user"), line_offset=1, row_unit="line")

    return from_frames(
        ratings,
        items,
        users,
        rating_col="rating",
        timestamp_col="timestamp",
        item_text=ML100K_ITEM_TEMPLATE,
        user_text=ML100K_USER_TEMPLATE,
        name="ml-100k",
    )


def _read_lists(path: Path, expected_lines: int | None = None) -> list[np.ndarray]:
    """A ``count id id ...`` file (users.dat, item-tag.dat): one array per line, counts checked."""
    text = path.read_text(encoding="ascii")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if expected_lines is not None and len(lines) != expected_lines:
        raise DataError(f"expected {expected_lines} lines, found {len(lines)}", path=path)
    out: list[np.ndarray] = []
    for number, line in enumerate(lines, start=1):
        try:
            values = np.array(line.split(), dtype=np.int64)
        except ValueError:
            raise DataError(
                f"expected whole numbers, got {line[:60]!r}", path=path, line=number
            ) from None
        if values.size == 0 or values[0] != values.size - 1:
            count = int(values[0]) if values.size else None
            raise DataError(
                f"the line says it lists {count} ids but lists {max(values.size - 1, 0)}",
                path=path,
                line=number,
            )
        out.append(values[1:])
    return out


def _load_citeulike(folder: Path, *, include_tags: bool) -> Dataset:
    """CiteULike-a: implicit user-article bookmarks; article titles and (some) abstracts as text."""
    titles_path = _need(folder / "titles.txt")
    titles = titles_path.read_text(encoding="utf-8").split("\n")
    if titles and titles[-1] == "":
        titles.pop()
    if len(titles) != _N_CITEULIKE_ITEMS:
        raise DataError(
            f"expected {_N_CITEULIKE_ITEMS} titles (one per item), found {len(titles)}",
            path=titles_path,
        )
    items = pd.DataFrame(
        {
            "item_id": np.arange(_N_CITEULIKE_ITEMS, dtype=np.int64),
            "title": [t.strip() or None for t in titles],
        }
    )

    abstracts_path = _need(folder / "raw-data.partial-aligned.csv")
    raw = pd.read_csv(
        abstracts_path, usecols=["doc.id", "raw.abstract"], dtype={"doc.id": np.int64}
    )
    abstract = pd.Series(pd.NA, index=items.index, dtype=object)
    doc = raw["doc.id"].to_numpy() - 1
    if doc.min() < 0 or doc.max() >= _N_CITEULIKE_ITEMS:
        raise DataError("doc.id outside 1..16980", path=abstracts_path, column="doc.id")
    abstract.iloc[doc] = [
        a.strip() if isinstance(a, str) and a.strip() else None for a in raw["raw.abstract"]
    ]
    items["abstract"] = abstract.where(abstract.notna(), None)

    if include_tags:
        tag_names = _need(folder / "tags.dat").read_text(encoding="utf-8").rstrip("\n").split("\n")
        per_item = _read_lists(_need(folder / "item-tag.dat"), _N_CITEULIKE_ITEMS)
        names = np.array(tag_names, dtype=object)
        items["tags"] = ["|".join(names[ids]) if ids.size else None for ids in per_item]

    users_path = _need(folder / "users.dat")
    per_user = _read_lists(users_path)
    lengths = np.array([a.size for a in per_user], dtype=np.int64)
    item_ids = np.concatenate(per_user) if per_user else np.empty(0, dtype=np.int64)
    user_ids = np.repeat(np.arange(len(per_user), dtype=np.int64), lengths)
    bad = np.flatnonzero((item_ids < 0) | (item_ids >= _N_CITEULIKE_ITEMS))
    if bad.size:
        line = int(user_ids[bad[0]]) + 1
        raise DataError(
            f"item {int(item_ids[bad[0]])} outside 0..16979", path=users_path, line=line
        )
    interactions = pd.DataFrame({"user_id": user_ids, "item_id": item_ids})
    users = pd.DataFrame({"user_id": np.arange(len(per_user), dtype=np.int64)})

    return from_frames(
        interactions,
        items,
        users,
        item_text=CITEULIKE_ITEM_TEMPLATE,
        name="citeulike-a",
    )
