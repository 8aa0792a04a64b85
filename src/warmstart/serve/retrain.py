"""A new model version from a served model and the service's database (`warmstart retrain`).

The new training data is the old model's interactions plus every stored event, over the old
catalogue with the stored items applied (new ones added, edited texts replaced, deleted ones
dropped, with their interactions) and the stored user descriptions. The model is refitted with
the same class and settings. `serve.json` in the output records the last event it learned from,
so a server loading it replays only the events that came after.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmstart._io import write_json
from warmstart.data.build import from_frames
from warmstart.data.dataset import Dataset
from warmstart.data.templates import render_attributes
from warmstart.errors import DataError, ModelFormatError
from warmstart.models.hybrid import WarmStartRecommender
from warmstart.registry import load_model
from warmstart.serve.engine import item_text
from warmstart.serve.store import Store

log = logging.getLogger(__name__)

SIDECAR = "serve.json"


def events_through(model_dir: Path) -> int:
    """The last event seq a retrained model learned from (0 for a model fitted from files)."""
    path = Path(model_dir) / SIDECAR
    if not path.is_file():
        return 0
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["events_through_seq"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{path}: not a valid serve.json ({exc})") from exc


def _canonical(ids: list[str]) -> list[Any]:
    """Ids as the model will keep them: integers when every id is one, else strings."""
    if ids and all(i.lstrip("-").isdigit() and str(int(i)) == i for i in ids):
        return [int(i) for i in ids]
    return ids


def training_data(model: WarmStartRecommender, store: Store) -> tuple[Dataset, int]:
    """The old model's interactions and the store's facts as one Dataset, and the last event seq."""
    cat = model.catalogue
    item_ids = [str(x) for x in cat.item_ids.to_list()]
    items: dict[str, tuple[str, str]] = {
        i: (text, title) for i, text, title in zip(item_ids, cat.item_text, cat.titles, strict=True)
    }
    for record in store.items(include_deleted=True):
        if record.deleted:
            items.pop(record.item_id, None)
            continue
        text = item_text(record, cat.item_template)
        if text:
            title = str(record.attributes.get("title") or "") or text[:80]
            items[record.item_id] = (text, title)
    users: dict[str, str | None] = {
        str(u): t for u, t in zip(cat.user_ids.to_list(), cat.user_text, strict=True)
    }
    for u in store.users():
        parts = [render_attributes(cat.user_template, u.attributes), u.text]
        users[u.user_id] = ". ".join(p.strip() for p in parts if p and p.strip()) or None

    seen = cat.seen.tocoo()
    user_ext = np.array([str(x) for x in cat.user_ids.to_list()], dtype=object)
    item_ext = np.array(item_ids, dtype=object)
    rows = {
        "user_id": list(user_ext[seen.row]),
        "item_id": list(item_ext[seen.col]),
        "weight": seen.data.astype(np.float64).tolist(),
    }
    events = store.events()
    last = max((e.seq for e in events), default=0)
    for e in events:
        rows["user_id"].append(e.user_id)
        rows["item_id"].append(e.item_id)
        rows["weight"].append(float(e.value) if e.type == "rating" and e.value else 1.0)
        users.setdefault(e.user_id, None)
    frame = pd.DataFrame(rows)
    frame = frame[frame["item_id"].isin(items.keys())]
    if frame.empty:
        raise DataError("nothing to retrain on: no interactions with live items")

    item_keys = list(items)
    user_keys = list(users)
    item_map = dict(zip(item_keys, _canonical(item_keys), strict=True))
    user_map = dict(zip(user_keys, _canonical(user_keys), strict=True))
    frame = frame.assign(
        user_id=frame["user_id"].map(user_map), item_id=frame["item_id"].map(item_map)
    )
    item_frame = pd.DataFrame(
        {
            "item_id": [item_map[i] for i in item_keys],
            "text": [items[i][0] for i in item_keys],
            "title": [items[i][1] for i in item_keys],
        }
    )
    user_frame = pd.DataFrame(
        {"user_id": [user_map[u] for u in user_keys], "text": [users[u] for u in user_keys]}
    )
    dataset = from_frames(
        frame,
        item_frame,
        user_frame,
        rating_col="weight",
        item_text="{text}",
        user_text="{text}",
        name="retrain",
    )
    return dataset, last


def retrain(model_dir: Path, db_url: str, output: Path) -> tuple[Path, int]:
    """Fit a new version of the model at `model_dir` on the store at `db_url`; save to `output`.

    Returns the output folder and the last event seq it learned from.
    """
    old = load_model(model_dir)
    if not isinstance(old, WarmStartRecommender):
        raise ModelFormatError(f"{model_dir}: retrain needs a warmstart or warmstart-ft model")
    with Store.open(db_url) as store:
        dataset, last = training_data(old, store)
    params = old.config.model_dump()
    new = type(old)(**params)
    log.info("retraining on %d interactions (events through seq %d)", dataset.n_interactions, last)
    new.fit(dataset)
    # The texts were rendered already; keep the old templates for attributes posted later.
    cat = new.catalogue
    new._catalogue = replace(
        cat, item_template=old.catalogue.item_template, user_template=old.catalogue.user_template
    )
    new.save(output)
    write_json(Path(output) / SIDECAR, {"events_through_seq": last})
    return Path(output), last
