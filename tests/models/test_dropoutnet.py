"""DropoutNet: the model contract, plus what is specific to it (training loss, cold items, seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.models.test_models import CF, ModelContract
from tests.synthetic import Synthetic
from warmstart.models import Recommender
from warmstart.models.dropoutnet import DropoutNetRecommender

pytestmark = [
    pytest.mark.filterwarnings("ignore:Method expects CSR input"),
    pytest.mark.usefixtures("_environment"),  # tests/conftest.py
]

PARAMS: dict[str, Any] = {
    "encoder": "hashing",
    "cf": CF,
    "hidden": (32,),
    "rank_out": 16,
    "n_top": 20,
    "n_random": 20,
    "epochs": 10,
    "batch_size": 16,
    "lr": 0.003,
    "num_threads": 1,
}


class TestDropoutNetContract(ModelContract):
    model_name = "dropoutnet"
    params: ClassVar[dict[str, Any]] = PARAMS
    folds_in = True
    text_aware = True
    serves_cold_items = True
    serves_cold_users = True

    def test_loss_decreases(self, model: Recommender) -> None:
        assert isinstance(model, DropoutNetRecommender)
        losses = model.loss_history_
        assert len(losses) == PARAMS["epochs"]
        assert all(np.isfinite(losses))
        assert losses[-1] < 0.8 * losses[0], losses

    def test_cold_items_placed_by_text(
        self,
        model: Recommender,
        data: Synthetic,
    ) -> None:
        """Cold items have no preference input, yet land among their text group's items."""
        assert isinstance(model, DropoutNetRecommender)
        cat = model.catalogue
        cold_ids = sorted(data.cold_item_ids)
        cold = cat.item_ids.to_internal(cold_ids)
        assert not np.any(model.item_pref[cold])
        sims = model.similar_items(cold_ids, k=5)
        shares = [
            data.group_share(sims.item_ids[j], data.item_group[i]) for j, i in enumerate(cold_ids)
        ]
        assert np.mean(shares) >= 0.8, shares
        # each group's users score their group's cold items above the other groups' cold items
        for g in range(3):
            users = cat.user_ids.to_internal(data.warm_users_of(g))
            scores = model.user_vectors[users] @ model.item_vectors.T
            own = cat.item_ids.to_internal(data.items_of(g, cold=True))
            other = np.setdiff1d(cold, own)
            assert scores[:, own].min(axis=1).mean() > scores[:, other].max(axis=1).mean()

    def test_fixed_seed_is_deterministic(
        self,
        data: Synthetic,
        tmp_path: Path,
    ) -> None:
        a, b = _fit(data, tmp_path, epochs=3), _fit(data, tmp_path, epochs=3)
        assert a.loss_history_ == b.loss_history_
        assert np.array_equal(a.item_vectors, b.item_vectors)
        assert np.array_equal(a.user_vectors, b.user_vectors)
        c = _fit(data, tmp_path, epochs=3, seed=1)
        assert not np.array_equal(a.item_vectors, c.item_vectors)


def _fit(data: Synthetic, tmp_path: Path, **overrides: Any) -> DropoutNetRecommender:
    return DropoutNetRecommender(cache_dir=tmp_path, **{**PARAMS, **overrides}).fit(data.dataset)


@pytest.mark.parametrize(
    ("overrides", "min_share"),
    [
        pytest.param({"optimizer": "sgd", "lr": 0.05, "content_hidden": 16}, 0.8, id="sgd-content"),
        pytest.param({"batching": "pairs", "batch_size": 128}, 0.8, id="reference-pairs"),
        pytest.param({"dropout": 0.0, "user_transform": 0.0, "epochs": 2}, 0.0, id="no-dropout"),
    ],
)
def test_variants_fit_and_round_trip(
    data: Synthetic,
    tmp_path: Path,
    overrides: dict[str, Any],
    min_share: float,
) -> None:
    m = _fit(data, tmp_path, **overrides)
    users = data.warm_users
    r = m.recommend(users, k=5)
    assert (r.items >= 0).all()
    shares = [data.group_share(r.item_ids[j], data.user_group[u]) for j, u in enumerate(users)]
    assert np.mean(shares) >= min_share, f"own-group share {np.mean(shares):.2f}"
    loaded = Recommender.load(m.save(tmp_path / "m"))
    assert np.array_equal(loaded.recommend(users, k=5).scores, r.scores)
    named = data.items_of(0, cold=False)[:2]
    assert loaded.recommend_for_profile(item_ids=named, k=3).row(0) == m.recommend_for_profile(
        item_ids=named, k=3
    ).row(0)
