"""The LightFM hybrid baseline: the model contract, plus cold items, persistence and determinism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.models.test_models import LIGHTFM, QUALITY
from tests.synthetic import GROUPS, Synthetic
from warmstart.data import from_frames
from warmstart.models import Profile, Recommender
from warmstart.models.lightfm_model import LightFMRecommender

pytestmark = pytest.mark.usefixtures("_environment")  # tests/conftest.py

PARAMS = LIGHTFM


def _fit(data: Synthetic, tmp_path: Path, **overrides: Any) -> LightFMRecommender:
    return LightFMRecommender(cache_dir=tmp_path, **{**PARAMS, **overrides}).fit(data.dataset)


def test_cold_items_are_placed_by_text_alone(data: Synthetic, tmp_path: Path) -> None:
    """A cold item is exactly its text features (no untrained identity), and lands in its group."""
    m = _fit(data, tmp_path)
    assert m.item_coder is not None
    cat = m.catalogue
    cold = cat.item_ids.to_internal(sorted(data.cold_item_ids))
    text_only, bias = m._text_part(m.item_coder.transform(m.item_embeddings[cold]), "item")
    k = m.config.no_components
    # equal up to float32 rounding: sparse products may sum a row's terms in another order
    np.testing.assert_allclose(m.item_vectors[cold, :k], text_only, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.item_vectors[cold, k], bias, rtol=1e-5, atol=1e-7)
    cold_groups = np.array([data.item_group[i] for i in cat.item_ids.to_external(cold)])
    for g in range(len(GROUPS)):
        users = cat.user_ids.to_internal(data.warm_users_of(g))
        scores = m._score_users(users)[:, cold]
        own, other = scores[:, cold_groups == g], scores[:, cold_groups != g]
        # every user's best cold item is one of their own group's
        assert np.mean(own.max(axis=1) > other.max(axis=1)) >= QUALITY, GROUPS[g]


def test_save_load_is_exact(data: Synthetic, tmp_path: Path) -> None:
    m = _fit(data, tmp_path)
    m.add_items(["extra"], texts=[data.group_text(1, seed=4)])
    loaded = Recommender.load(m.save(tmp_path / "m"))
    assert isinstance(loaded, LightFMRecommender)
    a, b = m._state(), loaded._state()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    users = [*data.warm_users, *sorted(data.cold_user_ids)]
    np.testing.assert_array_equal(
        m.recommend(users, k=10).scores, loaded.recommend(users, k=10).scores
    )
    profiles = [
        Profile(item_ids=data.items_of(0, cold=False)[:2], text=data.group_text(0)),
        Profile(attributes={"bio": data.group_text(2)}),
    ]
    pa, pb = m.recommend_for_profiles(profiles, k=8), loaded.recommend_for_profiles(profiles, k=8)
    np.testing.assert_array_equal(pa.items, pb.items)
    np.testing.assert_array_equal(pa.scores, pb.scores)
    ta = m.similar_items(text=[data.group_text(1)], k=5)
    tb = loaded.similar_items(text=[data.group_text(1)], k=5)
    np.testing.assert_array_equal(ta.scores, tb.scores)


def test_deterministic_with_one_thread(data: Synthetic, tmp_path: Path) -> None:
    a, b = _fit(data, tmp_path), _fit(data, tmp_path)
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    np.testing.assert_array_equal(a.user_vectors, b.user_vectors)
    c = _fit(data, tmp_path, seed=1)
    assert not np.array_equal(a.item_vectors, c.item_vectors)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"text_features": "pca", "pca_dims": 8}, id="pca"),
        pytest.param({"text_features": "raw"}, id="raw"),
        pytest.param({"item_identity": False}, id="no-item-identity"),
        pytest.param({"loss": "bpr"}, id="bpr"),
    ],
)
def test_variants(data: Synthetic, tmp_path: Path, overrides: dict[str, Any]) -> None:
    m = _fit(data, tmp_path, **overrides)
    users = data.warm_users
    r = m.recommend(users, k=5)
    shares = [data.group_share(r.item_ids[j], data.user_group[u]) for j, u in enumerate(users)]
    assert np.mean(shares) >= QUALITY, f"own-group share {np.mean(shares):.2f}"
    cold = sorted(data.cold_user_ids)
    r = m.recommend(cold, k=5)
    shares = [data.group_share(r.item_ids[j], data.user_group[u]) for j, u in enumerate(cold)]
    assert np.mean(shares) >= QUALITY, f"cold users' own-group share {np.mean(shares):.2f}"
    loaded = Recommender.load(m.save(tmp_path / "m"))
    np.testing.assert_array_equal(
        loaded.recommend(users, k=5).scores, m.recommend(users, k=5).scores
    )


def test_data_without_user_text(data: Synthetic, tmp_path: Path) -> None:
    """Users are identity only; free text from a visitor is matched against item text."""
    ds = from_frames(
        data.interactions,
        data.items,
        user_col="user_id",
        item_col="item_id",
        rating_col="rating",
        item_text="{title}. {text}",
    )
    m = LightFMRecommender(cache_dir=tmp_path, **PARAMS).fit(ds)
    assert not m.uses_user_text_
    assert m.user_feature_embeddings.shape == (0, m.config.no_components)
    for g in range(len(GROUPS)):
        got = [i for i, _ in m.recommend_for_profile(text=data.group_text(g, seed=3), k=5).row(0)]
        assert data.group_share(got, g) >= QUALITY, (GROUPS[g], got)
    nothing = m.recommend_for_profiles([Profile()], k=ds.n_items)
    pop = m.catalogue.item_counts()[nothing.items[0]]
    assert np.all(np.diff(pop) <= 0), "a visitor who says nothing gets popularity"
