"""Real-data checks of the built-in loaders; skipped when the datasets folder is absent."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from warmstart.data import (
    BUILTIN_DATASETS,
    Dataset,
    TextTemplate,
    citeulike_dropoutnet_split,
    load_builtin,
    resolve_data_dir,
)
from warmstart.data import builtin as builtin_module
from warmstart.errors import DataError, DataNotFoundError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir() -> Path:
    try:
        path = resolve_data_dir()
    except DataNotFoundError:
        pytest.skip("datasets folder not found (set WARMSTART_DATA)")
    for name in BUILTIN_DATASETS:
        if name.endswith("-sparse"):  # built from the others
            continue
        if not (path / name).is_dir():
            pytest.skip(f"{name} not in {path}")
    return path


def test_ml100k_counts(data_dir: Path) -> None:
    start = time.perf_counter()
    ds = load_builtin("ml-100k", data_dir)
    assert time.perf_counter() - start < 1.0
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.has_ratings and ds.name == "ml-100k"
    assert ds.weights.min() == 1 and ds.weights.max() == 5
    assert ds.timestamps is not None and ds.timestamps.min() > 8e8
    assert ds.item_ids.to_list()[:3] == [1, 2, 3] and ds.user_ids.is_integer
    assert ds.report.duplicates_merged == 0 and ds.report.users_without_profile == 0
    assert ds.users.dtype == np.int32 and ds.weights.dtype == np.float32


def test_ml100k_item_text_and_features(data_dir: Path) -> None:
    ds = load_builtin("ml-100k", data_dir)
    toy = ds.item_text[0]
    assert toy is not None and toy.startswith("Toy Story (1995). Animation, Children's, Comedy. ")
    assert "Andy" in toy
    for col in ("title", "genres", "release_date", "plot"):
        assert col in ds.item_features.columns
    assert ds.item_features["genres"].iloc[0] == "Animation|Children's|Comedy"
    assert ds.item_features["title"].iloc[0] == "Toy Story (1995)"
    assert int(ds.item_features["plot"].isna().sum()) == 71
    # item 267 is ML-100K's placeholder (title "unknown", no genre, no plot): it has no text
    assert ds.item_text[ds.item_ids.to_internal([267])[0]] is None
    assert ds.report.items_without_text == 1
    texts = [t for t in ds.item_text if t is not None]
    assert len(texts) == 1681
    assert "unknown" not in "|".join(ds.item_features["genres"].dropna())
    assert_text_reproducible(ds)


def assert_text_reproducible(ds: Dataset) -> None:
    """Rendering the stored template over a features row gives the stored text."""
    for template, texts, features in (
        (ds.item_template, ds.item_text, ds.item_features),
        (ds.user_template, ds.user_text, ds.user_features),
    ):
        if template is None:
            continue
        t = TextTemplate(template)
        rendered = [
            t.render({str(k): v for k, v in row.items()}) for row in features.to_dict("records")
        ]
        assert tuple(rendered) == texts


def test_ml100k_users(data_dir: Path) -> None:
    ds = load_builtin("ml-100k", data_dir)
    assert ds.user_text[0] == "A 24-year-old man, occupation: technician"
    assert list(ds.user_features.columns) == ["age", "gender", "occupation", "zip"]
    assert set(ds.user_features["gender"]) == {"man", "woman"}
    assert ds.user_template is not None and "{age}" in ds.user_template
    assert ds.report.users_without_text == 0
    assert_text_reproducible(ds)


def test_citeulike_counts_and_text(data_dir: Path) -> None:
    start = time.perf_counter()
    ds = load_builtin("citeulike-a", data_dir)
    assert time.perf_counter() - start < 3.0
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (5_551, 16_980, 204_986)
    assert not ds.has_ratings and ds.timestamps is None
    assert set(np.unique(ds.weights)) == {1.0}
    assert ds.user_ids.to_list()[:3] == [0, 1, 2] and ds.item_ids.to_list()[-1] == 16_979
    assert int(ds.item_features["abstract"].notna().sum()) == 1_903
    assert "tags" not in ds.item_features.columns
    first = ds.item_text[0]
    assert first is not None and first.startswith(
        "The metabolic world of Escherichia coli is not small. To elucidate"
    )
    assert ds.item_template == "{title}. {abstract}"
    assert ds.report.items_without_text == 0
    assert_text_reproducible(ds)


def test_citeulike_tags_never_in_text(data_dir: Path) -> None:
    plain = load_builtin("citeulike-a", data_dir)
    tagged = load_builtin("citeulike-a", data_dir, include_tags=True)
    assert tagged.item_text == plain.item_text
    tags = tagged.item_features["tags"]
    assert int(tags.notna().sum()) > 10_000
    assert tagged.item_template is not None and "tags" not in tagged.item_template
    sample = str(tags.dropna().iloc[0]).split("|")[0]
    assert isinstance(sample, str) and sample


def test_dropoutnet_split(data_dir: Path) -> None:
    split = citeulike_dropoutnet_split(data_dir)
    assert {k: len(v) for k, v in split.items()} == {
        "train": 164_210,
        "vali": 13_037,
        "test": 27_739,
    }
    items = {k: set(v["iid"]) for k, v in split.items()}
    assert not (items["train"] & items["test"]) and not (items["vali"] & items["test"])
    ds = load_builtin("citeulike-a", data_dir)
    pairs = set(zip(ds.users.tolist(), ds.items.tolist(), strict=True))
    for frame in split.values():
        assert list(frame.columns) == ["uid", "iid"]
        assert set(zip(frame["uid"], frame["iid"], strict=True)) <= pairs


def test_unknown_name_and_tags_on_ml(data_dir: Path) -> None:
    with pytest.raises(DataError, match="ml-100k, citeulike-a"):
        load_builtin("ml-1m", data_dir)
    with pytest.raises(DataError, match="citeulike-a only"):
        load_builtin("ml-100k", data_dir, include_tags=True)


def test_resolution_order(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("WARMSTART_DATA", str(other))
    assert resolve_data_dir(data_dir) == data_dir  # the argument wins
    assert resolve_data_dir() == other  # then the environment variable
    monkeypatch.delenv("WARMSTART_DATA")
    assert resolve_data_dir().resolve() == data_dir.resolve()  # then beside the repository


def test_explicit_missing_folder_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataNotFoundError, match="nowhere"):
        resolve_data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("WARMSTART_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataNotFoundError, match=r"gone.*WARMSTART_DATA"):
        resolve_data_dir()
    with pytest.raises(DataNotFoundError, match="no ml-100k/ folder"):
        load_builtin("ml-100k", tmp_path)


def test_not_found_message_lists_every_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    places = [tmp_path / "a" / "shared" / "datasets", tmp_path / "b" / "shared" / "datasets"]
    monkeypatch.delenv("WARMSTART_DATA", raising=False)
    monkeypatch.setattr(builtin_module, "_default_candidates", lambda: places)
    with pytest.raises(DataNotFoundError) as err:
        resolve_data_dir()
    msg = str(err.value)
    for place in places:
        assert str(place) in msg
    assert "--data-dir" in msg and "WARMSTART_DATA" in msg


def test_sparse_sample_is_a_core_of_a_sample() -> None:
    """Every user and item left has at least min_count interactions, all from the original, and
    item text is re-rendered from the features (titles alone here)."""
    from tests.synthetic import make_synthetic
    from warmstart.data.builtin import sparse_sample

    full = make_synthetic().dataset
    small = sparse_sample(full, interactions=0.7, min_count=4, item_text="{title}", seed=1)
    assert 0 < small.n_interactions < full.n_interactions
    assert small.user_counts().min() >= 4 and small.item_counts().min() >= 4
    pairs = set(
        zip(
            full.user_ids.to_external(full.users).tolist(),
            full.item_ids.to_external(full.items).tolist(),
            strict=True,
        )
    )
    kept = zip(
        small.user_ids.to_external(small.users).tolist(),
        small.item_ids.to_external(small.items).tolist(),
        strict=True,
    )
    assert set(kept) <= pairs
    titles = full.item_features["title"]
    first = full.item_ids.to_internal(small.item_ids.to_external([0]))[0]
    assert small.item_text[0] == titles.iat[first]
    again = sparse_sample(full, interactions=0.7, min_count=4, item_text="{title}", seed=1)
    assert np.array_equal(again.users, small.users) and np.array_equal(again.items, small.items)
    with pytest.raises(DataError, match="5-core"):
        sparse_sample(full, interactions=0.01, min_count=5)


def test_sparse_variants_are_small_and_titled(data_dir: Path) -> None:
    for name in ("ml-100k-sparse", "citeulike-a-sparse"):
        ds = load_builtin(name, data_dir)
        assert 5_000 < ds.n_interactions < 12_000, name
        assert ds.user_counts().min() >= 5 and ds.item_counts().min() >= 5
        assert all(t and len(t) < 300 for t in ds.item_text)
