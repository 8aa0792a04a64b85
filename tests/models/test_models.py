"""One contract every model in `warmstart.registry.MODELS` must honour, on data with a known answer.

`ModelContract` holds the tests; each `Test*` subclass names a model, its test parameters and
flags saying what to expect of it (does it learn, fold in visitors, read text, add items).
The data (tests/synthetic.py) has three taste groups whose users only touch their own group's
items, so "recommends the right group" is a checkable property.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydantic
import pytest
import scipy.sparse as sp

from tests.synthetic import GROUPS, Synthetic
from warmstart.errors import ModelFormatError, UnknownIdError
from warmstart.models import (
    Explanation,
    Profile,
    Recommendations,
    Recommender,
    WarmStartRecommender,
    cf,
)
from warmstart.models.arrays import binary, summed_rows
from warmstart.models.base import ProfileQuery
from warmstart.models.cf import ALSRecommender, fold_in
from warmstart.models.hybrid import model as hybrid_model
from warmstart.models.hybrid.blending import (
    ColdBlend,
    dense_columns,
    standardise_sparse,
    time_ranks,
)
from warmstart.models.moments import ItemMoments
from warmstart.registry import MODELS

pytestmark = [
    # implicit's own kNN converts to COO internally and then warns about it
    pytest.mark.filterwarnings("ignore:Method expects CSR input"),
    # tests/conftest.py: a tmp embedding cache and single-threaded BLAS for the whole module
    pytest.mark.usefixtures("_environment"),
]

QUALITY = 0.8  # share of a warm user's top-5 that must come from their own group


def assert_same_top(
    ids_a: Sequence[Any], scores_a: Sequence[float], ids_b: Sequence[Any], scores_b: Sequence[float]
) -> None:
    """Same top-k up to the order of near-tied items.

    Scores equal in exact arithmetic can differ by an ulp between a batched matrix product and a
    single row (BLAS sums in another order), which flips the order of tied items. Anything else
    must match exactly.
    """
    sa, sb = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    np.testing.assert_allclose(sa, sb, atol=1e-5)
    for p, (a, b) in enumerate(zip(ids_a, ids_b, strict=True)):
        if a != b:
            near = np.abs(sa - sa[p]) <= 1e-5
            assert near.sum() > 1 or p == len(sa) - 1, f"position {p}: {a!r} != {b!r}, no tie"
            assert b not in ids_a or abs(sa[list(ids_a).index(b)] - sa[p]) <= 1e-5


def _profiles(data: Synthetic) -> list[Profile]:
    """Visitors of every kind: items only, text only, attributes, items + text, nothing at all."""
    space, romance, cooking = (data.items_of(g, cold=False) for g in range(3))
    return [
        Profile(item_ids=space[:3]),
        Profile(text=data.group_text(1, seed=1)),
        Profile(item_ids=cooking[:2], text=data.group_text(2, seed=2)),
        Profile(attributes={"bio": data.group_text(0, seed=3)}),
        Profile(item_ids=[romance[0]]),
        Profile(),
    ]


class ModelContract:
    """Mixin of contract tests; subclasses set `model_name`, `params` and the flags below."""

    model_name: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    learns: ClassVar[bool] = True  # warm users get their own group's items
    folds_in: ClassVar[bool] = False  # visitors naming items get items like them
    text_aware: ClassVar[bool] = False  # encoder/cache_dir, text visitors, add_items
    serves_cold_items: ClassVar[bool] = False
    serves_cold_users: ClassVar[bool] = False

    # ---- fixtures ------------------------------------------------------------------------
    @classmethod
    def make(cls, cache_dir: Path, **overrides: Any) -> Recommender:
        klass = MODELS[cls.model_name]
        params = {**cls.params, **overrides}
        if cls.text_aware:
            return klass(cache_dir=str(cache_dir), **params)  # type: ignore[call-arg]
        return klass(**params)

    # ---- class and config ----------------------------------------------------------------
    def test_flags_match_class(self) -> None:
        klass = MODELS[self.model_name]
        assert klass.name == self.model_name
        assert klass.serves_cold_items is self.serves_cold_items
        assert klass.serves_cold_users is self.serves_cold_users

    def test_fit_returns_self(self, data: Synthetic, tmp_path: Path) -> None:
        m = self.make(tmp_path)
        assert not m.is_fitted
        assert m.fit(data.dataset) is m
        assert m.is_fitted

    def test_config_round_trip(self, model: Recommender) -> None:
        again = type(model)(**model.config.model_dump())
        assert again.config == model.config
        from_json = type(model)(**json.loads(model.config.model_dump_json()))
        assert from_json.config == model.config

    def test_repr_is_short_and_says_what_it_was_fitted_on(
        self, model: Recommender, data: Synthetic, tmp_path: Path
    ) -> None:
        fresh = repr(self.make(tmp_path))
        assert fresh.startswith(f"{type(model).__name__}(") and "fitted" not in fresh
        ds = data.dataset
        assert f"fitted on {ds.n_users:,} users x {ds.n_items:,} items" in repr(model)
        assert len(repr(model)) < 300

    def test_unknown_config_key(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            MODELS[self.model_name](no_such_option=1)

    # ---- recommend -----------------------------------------------------------------------
    def test_recommend_shape_and_no_seen(self, model: Recommender, data: Synthetic) -> None:
        users = data.warm_users
        r = model.recommend(users, k=7)
        assert len(r) == len(users)
        assert r.items.shape == r.item_ids.shape == r.scores.shape == (len(users), 7)
        assert r.scores.dtype == np.float32
        assert set(r.routes) == {"warm"}
        assert (r.items >= 0).all()
        for j, u in enumerate(users):
            ids = list(r.item_ids[j])
            assert len(set(ids)) == 7
            assert not set(ids) & data.history(u), f"user {u} got an item they have seen"
            assert np.all(np.diff(r.scores[j]) <= 0), "scores must be best first"
            assert [i for i, _ in r.row(j)] == ids

    def test_exclude_seen_false_allows_seen(self, model: Recommender, data: Synthetic) -> None:
        users = data.warm_users
        full = model.recommend(users, k=data.n_items, exclude_seen=False)
        assert (full.items >= 0).all(), "with nothing excluded every item is available"
        for j in range(len(users)):
            assert sorted(full.items[j]) == list(range(data.n_items))
        if self.learns:
            top = model.recommend(users, k=10, exclude_seen=False)
            with_seen = [bool(set(top.item_ids[j]) & data.history(u)) for j, u in enumerate(users)]
            assert np.mean(with_seen) > 0.5, "a learning model should rank seen items high"

    def test_warm_users_get_their_group(
        self, model: Recommender, recs: Recommendations, data: Synthetic
    ) -> None:
        shares = [
            data.group_share(recs.item_ids[j], data.user_group[u])
            for j, u in enumerate(data.warm_users)
        ]
        if self.learns:
            assert np.mean(shares) >= QUALITY, f"own-group share {np.mean(shares):.2f}"
        else:
            assert np.mean(shares) < 0.7, "a non-learning baseline should not know the groups"

    def test_batch_equals_scalar(self, model: Recommender, data: Synthetic) -> None:
        users = [*data.warm_users[:12], *sorted(data.cold_user_ids)[:2]]
        batch = model.recommend(users, k=6)
        for j, u in enumerate(users):
            one_result = model.recommend_one(u, k=6)
            assert isinstance(one_result, Recommendations) and len(one_result) == 1
            assert one_result.routes == (batch.routes[j],)
            one = one_result.row(0)
            assert_same_top(
                [i for i, _ in one], [s for _, s in one], batch.item_ids[j], batch.scores[j]
            )

    def test_cold_users_are_routed(self, model: Recommender, data: Synthetic) -> None:
        cold = sorted(data.cold_user_ids)
        r = model.recommend(cold, k=5)
        assert set(r.routes) == {"cold" if self.serves_cold_users else "fallback"}
        assert (r.items >= 0).all()
        if self.text_aware:  # cold users have a bio in their group's words
            shares = [
                data.group_share(r.item_ids[j], data.user_group[u]) for j, u in enumerate(cold)
            ]
            # 12 of 15 is 0.8 exactly, which the float mean of fifths rounds just below
            assert np.mean(shares) >= QUALITY - 1e-9, f"own-group share {np.mean(shares):.3f}"

    def test_profiles_batch_equals_scalar(self, model: Recommender, data: Synthetic) -> None:
        profiles = _profiles(data)
        batch = model.recommend_for_profiles(profiles, k=6)
        assert batch.items.shape == (len(profiles), 6)
        assert set(batch.routes) == {"profile"}
        for j, p in enumerate(profiles):
            one = model.recommend_for_profile(
                text=p.text, attributes=p.attributes, item_ids=p.item_ids, k=6
            ).row(0)
            assert_same_top(
                [i for i, _ in one], [s for _, s in one], batch.item_ids[j], batch.scores[j]
            )
            assert not set(batch.item_ids[j]) & set(p.item_ids or ()), "named items are excluded"

    def test_unknown_user(self, model: Recommender, data: Synthetic) -> None:
        for bad in ("nobody", 999_999):
            with pytest.raises(UnknownIdError, match=str(bad)) as info:
                model.recommend([data.warm_users[0], bad], k=3)
            assert isinstance(info.value, KeyError)
        with pytest.raises(UnknownIdError, match="nobody"):
            model.recommend_one("nobody")
        with pytest.raises(UnknownIdError, match="no-such-item"):
            model.recommend_for_profile(item_ids=["no-such-item"])

    @pytest.mark.parametrize("k", [0, -1])
    def test_bad_k(self, model: Recommender, data: Synthetic, k: int) -> None:
        with pytest.raises(ValueError):
            model.recommend(data.warm_users[:2], k=k)
        with pytest.raises(ValueError):
            model.recommend_for_profile(item_ids=data.items_of(0)[:1], k=k)
        with pytest.raises(ValueError):
            model.similar_items(data.items_of(0)[:1], k=k)

    def test_k_beyond_catalogue_pads(self, model: Recommender, data: Synthetic) -> None:
        users = data.warm_users[:5]
        k = data.n_items + 5
        r = model.recommend(users, k=k)
        assert r.items.shape == (5, k)
        for j, u in enumerate(users):
            n_ok = data.n_items - len(data.history(u))
            assert (r.items[j, :n_ok] >= 0).all()
            assert (r.items[j, n_ok:] == -1).all()
            assert all(i is None for i in r.item_ids[j, n_ok:])
            assert np.isneginf(r.scores[j, n_ok:]).all()
            assert len(r.row(j)) == n_ok

    def test_profile_k_beyond_catalogue_pads(self, model: Recommender, data: Synthetic) -> None:
        k = data.n_items + 5
        r = model.recommend_for_profiles([Profile(item_ids=data.items_of(1)[:2])], k=k)
        assert (r.items[0, : data.n_items - 2] >= 0).all()
        assert (r.items[0, data.n_items - 2 :] == -1).all()
        assert len(r.row(0)) == data.n_items - 2

    # ---- visitors ------------------------------------------------------------------------
    def test_visitor_naming_items(self, model: Recommender, data: Synthetic) -> None:
        if not self.folds_in:
            pytest.skip(f"{self.model_name} does not fold in visitors")
        for g in range(len(GROUPS)):
            named = data.items_of(g, cold=False)[:3]
            got = [i for i, _ in model.recommend_for_profile(item_ids=named, k=5).row(0)]
            assert len(got) == 5
            assert data.group_share(got, g) >= QUALITY, (GROUPS[g], got)

    def test_visitor_by_text(self, model: Recommender, data: Synthetic) -> None:
        if not self.text_aware:
            pytest.skip(f"{self.model_name} does not read text")
        for g in range(len(GROUPS)):
            got = [i for i, _ in model.recommend_for_profile(text=data.group_text(g), k=5).row(0)]
            assert data.group_share(got, g) >= QUALITY, (GROUPS[g], got)

    # ---- cold items, add_items, similar_items --------------------------------------------
    def test_cold_items_rank_by_group(self, model: Recommender, data: Synthetic) -> None:
        if not self.serves_cold_items or not self.learns:
            pytest.skip(f"{self.model_name} does not place cold items")
        users = data.warm_users
        r = model.recommend(users, k=data.n_items)
        right, in_top = [], []
        for j, u in enumerate(users):
            row = list(r.item_ids[j])
            cold_ranked = [i for i in row if i in data.cold_item_ids]
            right.append(data.item_group[cold_ranked[0]] == data.user_group[u])
            own = data.items_of(data.user_group[u], cold=True)
            in_top.append(min(row.index(i) for i in own) < 10)
        assert np.mean(right) >= QUALITY, f"best cold item in own group for {np.mean(right):.0%}"
        assert np.mean(in_top) >= QUALITY, f"own cold item in top-10 for {np.mean(in_top):.0%}"

    def test_add_items(self, data: Synthetic, tmp_path: Path) -> None:
        model = self.make(tmp_path).fit(data.dataset)
        if not self.text_aware:
            with pytest.raises(NotImplementedError):
                model.add_items(["brand-new"], texts=[data.group_text(0)])
            return
        n = data.n_items
        model.add_items(["brand-new"], texts=[data.group_text(0, n_words=8, seed=7)])
        assert model.catalogue.n_items == n + 1
        a_users, b_users = data.warm_users_of(0), data.warm_users_of(1)
        full_a = model.recommend(a_users, k=n + 1)
        full_b = model.recommend(b_users, k=n + 1)

        def ranks(r: Recommendations) -> np.ndarray:
            return np.array([list(row).index("brand-new") for row in r.item_ids])

        rank_a, rank_b = ranks(full_a), ranks(full_b)
        assert np.median(rank_a) < np.median(rank_b)
        assert np.mean(rank_a < 15) >= QUALITY, f"ranks for group-A users: {rank_a}"
        assert np.mean(rank_b < 15) <= 1 - QUALITY, f"ranks for group-B users: {rank_b}"
        sim = model.similar_items(["brand-new"], k=5)
        assert data.group_share(sim.item_ids[0], 0) >= QUALITY
        with pytest.raises(ValueError, match="already"):
            model.add_items(["brand-new"], texts=["x"])
        # survives a save / load
        loaded = Recommender.load(model.save(tmp_path / "m"))
        again = loaded.recommend(a_users, k=n + 1)
        assert np.array_equal(again.items, full_a.items)

    def test_similar_items(self, model: Recommender, data: Synthetic) -> None:
        items = [data.items_of(g, cold=False)[0] for g in range(len(GROUPS))]
        sim = model.similar_items(items, k=5)
        assert sim.items.shape == (3, 5)
        for j, iid in enumerate(items):
            assert iid not in set(sim.item_ids[j])
            if self.learns:
                assert data.group_share(sim.item_ids[j], j) >= QUALITY
        with pytest.raises(ValueError):
            model.similar_items(items, text=["x"])
        with pytest.raises(ValueError):
            model.similar_items()

    def test_similar_items_by_text(self, model: Recommender, data: Synthetic) -> None:
        texts = [data.group_text(g, seed=5) for g in range(len(GROUPS))]
        if not self.text_aware:
            with pytest.raises(NotImplementedError):
                model.similar_items(text=texts)
            return
        sim = model.similar_items(text=texts, k=5)
        for g in range(len(GROUPS)):
            assert data.group_share(sim.item_ids[g], g) >= QUALITY

    # ---- explanations --------------------------------------------------------------------
    def test_explain(self, model: Recommender, recs: Recommendations, data: Synthetic) -> None:
        with_neighbours = 0
        for j, u in enumerate(data.warm_users[:10]):
            item = recs.item_ids[j][0]
            e = model.explain(u, item)
            assert isinstance(e, Explanation)
            assert e.item_id == item
            assert np.isfinite(e.score)
            assert {n[0] for n in e.neighbours} <= data.history(u)
            assert all(isinstance(t, str) and s > 0 for _, t, s in e.neighbours)
            assert isinstance(e.summary(), str) and e.summary()
            assert json.dumps(e.to_dict())
            with_neighbours += bool(e.neighbours)
        if self.learns:
            assert with_neighbours >= 8
        with pytest.raises(UnknownIdError):
            model.explain("nobody", recs.item_ids[0][0])

    def test_explain_profile(self, model: Recommender, data: Synthetic) -> None:
        named = data.items_of(2, cold=False)[:3]
        top = model.recommend_for_profile(item_ids=named, text=data.group_text(2), k=1).row(0)[0][0]
        e = model.explain_profile(Profile(item_ids=named, text=data.group_text(2)), top)
        assert {n[0] for n in e.neighbours} <= set(named)
        assert e.summary()

    def test_explain_many_is_explain_per_item(self, model: Recommender, data: Synthetic) -> None:
        cat = model.catalogue
        u = data.warm_users[0]
        history = cat.seen[int(cat.user_ids.to_internal([u])[0])].indices
        items = np.arange(min(6, cat.n_items))
        scores = np.linspace(1.0, 0.5, items.size)
        many = model.explain_many(items, history, scores, None, "a free text", 2)
        one = [
            model._explain(int(i), history, float(s), None, "a free text", 2)
            for i, s in zip(items, scores, strict=True)
        ]
        assert len(many) == len(one)
        for a, b in zip(many, one, strict=True):  # a block product may round differently
            assert (a.item_id, a.score, a.notes) == (b.item_id, b.score, b.notes)
            assert [n[:2] for n in a.neighbours] == [n[:2] for n in b.neighbours]
            assert [n[2] for n in a.neighbours] == pytest.approx(
                [n[2] for n in b.neighbours], abs=1e-5
            )
            assert (a.text_similarity is None) == (b.text_similarity is None)
        assert any(e.neighbours for e in many) or not self.learns
        assert model.explain_many(items[:0], history, scores[:0]) == []

    # ---- persistence ---------------------------------------------------------------------
    def test_save_load_round_trip(
        self, model: Recommender, data: Synthetic, tmp_path: Path
    ) -> None:
        path = model.save(tmp_path / "model")
        assert (path / "model.json").is_file()
        for mmap in (False, True):  # arrays read, or mapped read-only (as the service does)
            loaded = Recommender.load(path, mmap=mmap)
            assert type(loaded) is type(model)
            assert loaded.config == model.config
            users = [*data.warm_users, *sorted(data.cold_user_ids)]
            a, b = model.recommend(users, k=10), loaded.recommend(users, k=10)
            assert np.array_equal(a.items, b.items)
            assert np.array_equal(a.scores, b.scores)
            assert list(a.item_ids.ravel()) == list(b.item_ids.ravel())
            assert a.routes == b.routes
            items = data.items_of(0)[:2] + data.items_of(1)[:2]
            sa, sb = model.similar_items(items, k=8), loaded.similar_items(items, k=8)
            assert np.array_equal(sa.items, sb.items)
            assert np.array_equal(sa.scores, sb.scores)
        # the class's own load works too; a different class refuses
        assert type(model).load(path).config == model.config
        other = next(k for k in MODELS.values() if k is not type(model))
        with pytest.raises(ModelFormatError):
            other.load(path)

    def test_save_load_profiles(self, model: Recommender, data: Synthetic, tmp_path: Path) -> None:
        loaded = Recommender.load(model.save(tmp_path / "model"))
        pa = model.recommend_for_profiles(_profiles(data), k=8)
        pb = loaded.recommend_for_profiles(_profiles(data), k=8)
        assert np.array_equal(pa.items, pb.items)
        assert np.array_equal(pa.scores, pb.scores)

    def test_save_replaces_folder(
        self, model: Recommender, data: Synthetic, tmp_path: Path
    ) -> None:
        path = tmp_path / "model"
        path.mkdir()
        (path / "stale.txt").write_text("left over")
        (path / "sub").mkdir()
        model.save(path)
        assert not (path / "stale.txt").exists()
        assert not (path / "sub").exists()
        model.save(path)  # over a saved model
        assert sorted(os.listdir(tmp_path)) == ["model"], "no temporary folders left behind"
        r = Recommender.load(path).recommend(data.warm_users[:3], k=4)
        assert np.array_equal(r.items, model.recommend(data.warm_users[:3], k=4).items)


# ---- one subclass per model -------------------------------------------------------------
CF = {"factors": 16, "iterations": 15, "num_threads": 1, "seed": 0}


class TestRandom(ModelContract):
    model_name = "random"
    learns = False
    serves_cold_items = True
    serves_cold_users = True


class TestPopularity(ModelContract):
    model_name = "popularity"
    learns = False
    serves_cold_users = True


class TestALS(ModelContract):
    model_name = "als"
    params: ClassVar[dict[str, Any]] = CF
    folds_in = True


class TestItemKNN(ModelContract):
    model_name = "item-knn"
    params: ClassVar[dict[str, Any]] = {"neighbours": 50}
    folds_in = True


class TestUserKNN(ModelContract):
    model_name = "user-knn"
    params: ClassVar[dict[str, Any]] = {"neighbours": 20}
    folds_in = True

    def test_one_named_item(self, model: Recommender, data: Synthetic) -> None:
        """A visitor naming one item is served (this once crashed on a sparse product)."""
        recs = model.recommend_for_profile(item_ids=data.items_of(0, cold=False)[:1], k=3)
        assert len(recs.row(0)) == 3


class TestContentKNN(ModelContract):
    model_name = "content-knn"
    params: ClassVar[dict[str, Any]] = {"encoder": "hashing"}
    folds_in = True
    text_aware = True
    serves_cold_items = True
    serves_cold_users = True


# Small and fast: ~600 interactions, 16 components, a dozen centroids.
LIGHTFM: dict[str, Any] = {
    "encoder": "hashing",
    "no_components": 16,
    "epochs": 30,
    "n_clusters": 12,
    "texts_per_cluster": 4,
    "num_threads": CF["num_threads"],  # one thread: LightFM is then deterministic
    "seed": CF["seed"],
}


class TestLightFM(ModelContract):
    model_name = "lightfm"
    params: ClassVar[dict[str, Any]] = LIGHTFM
    folds_in = True
    text_aware = True
    serves_cold_items = True
    serves_cold_users = True


class TestWarmStart(ModelContract):
    model_name = "warmstart"
    params: ClassVar[dict[str, Any]] = {"encoder": "hashing", "cf": CF}
    folds_in = True
    text_aware = True
    serves_cold_items = True
    serves_cold_users = True

    def test_lambdas_chosen_on_validation(self, model: Recommender) -> None:
        assert isinstance(model, WarmStartRecommender)
        assert model.config.lambda_items is None and model.config.lambda_users is None
        assert model.lambda_items_ in model.config.lambda_grid
        assert model.lambda_users_ in model.config.lambda_grid
        # the warm blend's weights are chosen on the same slice, and (0, 0) is on the grid
        choice = model.warm_user_choice_
        assert choice is not None and choice.users > 0
        assert choice.ndcg >= choice.ndcg_without
        assert (choice.neighbour_weight, choice.popularity_weight) == (
            model.warm_neighbour_weight_,
            model.warm_popularity_weight_,
        )

    def test_given_lambdas_are_kept(self, data: Synthetic, tmp_path: Path) -> None:
        m = self.make(tmp_path, lambda_items=2.5, lambda_users=7.0).fit(data.dataset)
        assert isinstance(m, WarmStartRecommender)
        assert (m.lambda_items_, m.lambda_users_) == (2.5, 7.0)

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"mapper": "ridge"}, id="linear-item-map"),
            pytest.param({"mapper": "mlp", "user_mapper": "mlp", "mlp_hidden": 64}, id="mlp"),
            pytest.param(
                {"mapper": "mlp", "mlp_hidden": 64, "lambda_items": 1.0, "lambda_users": 1.0},
                id="mlp-fixed-lambdas",
            ),
            pytest.param({"cf": {**CF, "algorithm": "bpr", "learning_rate": 0.05}}, id="bpr"),
            pytest.param({"neighbour_weight": 1.0, "popularity_weight": 1.0}, id="cold-blend"),
            pytest.param(
                {"warm_neighbour_weight": 1.0, "warm_popularity_weight": 0.5}, id="warm-blend"
            ),
        ],
    )
    def test_variants(self, data: Synthetic, tmp_path: Path, overrides: dict[str, Any]) -> None:
        m = self.make(tmp_path, **overrides).fit(data.dataset)
        users = data.warm_users
        r = m.recommend(users, k=5)
        assert (r.items >= 0).all()
        shares = [data.group_share(r.item_ids[j], data.user_group[u]) for j, u in enumerate(users)]
        assert np.mean(shares) >= QUALITY, f"own-group share {np.mean(shares):.2f}"
        loaded = Recommender.load(m.save(tmp_path / "m"))
        assert np.array_equal(loaded.recommend(users, k=5).scores, r.scores)


def test_warmstart_chooses_cold_user_weights(data: Synthetic, tmp_path: Path) -> None:
    """With enough users to hold out, the cold-user blend is chosen, kept, saved and served."""
    m = TestWarmStart.make(tmp_path, cold_user_fraction=0.5, cold_user_revealed=(1, 3)).fit(
        data.dataset
    )
    assert isinstance(m, WarmStartRecommender)
    choice = m.cold_user_choice_
    assert choice is not None and choice.users >= 20 and set(choice.ndcg) == {0, 1, 3}
    chosen = (choice.neighbour_weight, choice.popularity_weight, choice.popularity_fade)
    fitted = m.cold_blend_
    assert chosen == (fitted.neighbour_weight, fitted.popularity_weight, fitted.popularity_fade)
    assert choice.responsiveness is not None
    assert choice.responsiveness >= m.config.min_responsiveness
    before = m.neighbour_sim.copy()
    m.add_items(["new-space"], texts=[data.group_text(0, seed=7)])
    assert m.neighbour_sim.shape == (m.catalogue.n_items, m.catalogue.n_items)
    n = before.shape[0]  # old entries kept, and the new item has no neighbours yet
    assert (m.neighbour_sim[:n, :n] != before).nnz == 0 and m.neighbour_sim[n:].nnz == 0
    visitor = Profile(item_ids=data.items_of(1, cold=False)[:3])
    recs = m.recommend_for_profiles([visitor], k=5)
    assert data.group_share(recs.item_ids[0], 1) >= QUALITY
    loaded = Recommender.load(m.save(tmp_path / "m"))
    again = loaded.recommend_for_profiles([visitor], k=5)
    assert np.array_equal(again.scores, recs.scores)
    assert isinstance(loaded, WarmStartRecommender) and loaded.cold_user_choice_ == choice
    assert loaded.warm_user_choice_ == m.warm_user_choice_ is not None
    assert loaded.cf_choice_ == m.cf_choice_ is not None and loaded.cf_ == m.cf_
    assert loaded.fit_report() == m.fit_report()
    assert sorted(data.cold_user_ids)  # cold users are served through the blend too
    r = loaded.recommend(sorted(data.cold_user_ids), k=5)
    assert set(r.routes) == {"cold"}


@pytest.mark.parametrize(
    ("trained", "new_events", "history", "described", "cold_model", "plain_model"),
    [
        (True, False, 5, False, "warm", "warm"),
        (True, True, 7, False, "fold-in", "warm"),
        (False, True, 2, True, "few-shot", "popular"),
        (False, False, 0, True, "text-only", "popular"),
        (False, False, 0, False, "popular", "popular"),
    ],
)
def test_route_user_decides_how_a_service_serves_a_user(
    trained: bool,
    new_events: bool,
    history: int,
    described: bool,
    cold_model: str,
    plain_model: str,
) -> None:
    """One place routes: a model that serves users from their events and text, and one (ALS)
    that serves only its trained users' fitted vectors."""
    facts = {"trained": trained, "new_events": new_events, "history": history}
    assert WarmStartRecommender().route_user(**facts, described=described) == cold_model
    assert ALSRecommender().route_user(**facts, described=described) == plain_model


def test_warmstart_keeps_given_cold_user_weights(data: Synthetic, tmp_path: Path) -> None:
    """Given weights are served as given, a fade of 0 (the prior gone after one event) included,
    and survive a save and load."""
    m = TestWarmStart.make(
        tmp_path, neighbour_weight=0.5, popularity_weight=2.0, popularity_fade=0.0
    ).fit(data.dataset)
    assert isinstance(m, WarmStartRecommender)
    assert m.cold_user_choice_ is None
    assert m.cold_blend_ == ColdBlend(0.5, 2.0, 0.0)
    loaded = Recommender.load(m.save(tmp_path / "given"))
    assert isinstance(loaded, WarmStartRecommender)
    assert loaded.cold_blend_ == ColdBlend(0.5, 2.0, 0.0)


def test_cold_user_blend_trades_ndcg_for_responsiveness_only_when_asked(
    data: Synthetic, tmp_path: Path
) -> None:
    """The responsiveness floor can only cost held-out NDCG, and only buys responsiveness; a
    floor no weights reach takes the most responsive ones (the grid is the same either way)."""
    fits = {
        floor: TestWarmStart.make(
            tmp_path, cold_user_fraction=0.5, cold_user_revealed=(1, 3), min_responsiveness=floor
        ).fit(data.dataset)
        for floor in (0.0, 1.0)
    }
    free, strict = (fits[f].cold_user_choice_ for f in (0.0, 1.0))  # type: ignore[attr-defined]
    assert free is not None and strict is not None
    assert free.responsiveness is not None and strict.responsiveness is not None
    assert np.mean(list(free.ndcg.values())) >= np.mean(list(strict.ndcg.values()))
    assert strict.responsiveness >= free.responsiveness
    assert "responsiveness" in strict.summary() and "NDCG" in strict.summary()


def test_popularity_prior_fades_with_each_event() -> None:
    from warmstart.models.hybrid import popularity_fade

    n = np.array([0, 1, 3, 5], dtype=np.float32)
    kept = popularity_fade(n, 0.5, 10.0)
    assert kept[0] == 1.0 and np.all(np.diff(kept) < 0)
    assert np.allclose(kept, 0.5**n * (10.0 / (n + 10.0)))
    assert np.allclose(popularity_fade(n, 1.0, 0.0), [1, 0, 0, 0])  # lambda 0: any event ends it


def test_warmstart_truncated_histories_are_the_earliest_items(
    data: Synthetic, tmp_path: Path
) -> None:
    """With timestamps, the user map learns from each user's first items, as newcomers have them."""
    ds = data.dataset
    stamps = np.random.default_rng(3).permutation(ds.n_interactions).astype(np.int64)
    timed = dataclasses.replace(ds, timestamps=stamps)
    counts = np.bincount(ds.users, minlength=ds.n_users)
    warm, several = np.flatnonzero(counts > 0), np.flatnonzero(counts > 1)
    earliest = [ds.items[ds.users == u][np.argmin(stamps[ds.users == u])] for u in several]

    def first_item_rows(order: str) -> tuple[np.ndarray, np.ndarray]:
        """The history-mean block of each user's one-item training row, and the item embeddings."""
        m = TestWarmStart.make(
            tmp_path,
            lambda_items=1.0,
            lambda_users=1.0,
            text_profile_weight=0.0,
            neighbour_weight=0.0,
            popularity_weight=0.0,
            history_samples=(1,),
            history_order=order,
        ).fit(timed)
        assert isinstance(m, WarmStartRecommender)
        time_rank = time_ranks(timed) if order == "earliest" else None
        x, _ = m._user_training_rows(
            m.catalogue.seen, np.zeros((ds.n_users, 2), np.float32), time_rank
        )
        d, e = m.user_text_embeddings.shape[1], m.item_embeddings.shape[1]
        return x[len(warm) : len(warm) + len(several), d : d + e], m.item_embeddings

    rows, emb = first_item_rows("earliest")
    assert np.allclose(rows, emb[earliest], atol=1e-6)
    rows, emb = first_item_rows("random")
    assert not np.allclose(rows, emb[earliest], atol=1e-6)


def test_every_model_has_a_contract_class() -> None:
    from tests.finetune import test_finetune  # noqa: F401  (warmstart-ft's contract class lives with the fine-tuning tests)
    from tests.models import test_dropoutnet  # noqa: F401  (and DropoutNet's with its own tests)

    tested = {c.model_name for c in ModelContract.__subclasses__()}
    assert tested == set(MODELS)


# ---- loading errors ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(data: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return MODELS["popularity"]().fit(data.dataset).save(tmp_path_factory.mktemp("s") / "pop")


def test_load_without_model_json(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"model\.json"):
        Recommender.load(tmp_path)
    with pytest.raises(ModelFormatError):
        Recommender.load(tmp_path / "does-not-exist")


def test_load_other_format_version(saved: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    meta = json.loads((copy / "model.json").read_text())
    meta["format_version"] = meta["format_version"] + 1
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="format version"):
        Recommender.load(copy)


def test_load_bad_json_and_unknown_model(saved: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    (copy / "model.json").write_text("{not json")
    with pytest.raises(ModelFormatError):
        Recommender.load(copy)
    meta = json.loads((saved / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**meta, "model": "no-such-model"}))
    with pytest.raises(ModelFormatError, match="no-such-model"):
        Recommender.load(copy)


def test_unfitted_model_raises() -> None:
    from warmstart.errors import NotFittedError

    with pytest.raises(NotFittedError):
        MODELS["popularity"]().recommend([1000], k=3)


def test_fold_in_reuse_keeps_the_solver_only_for_the_same_array() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 8)).astype(np.float32)
    rows = sp.csr_matrix(
        (np.full(4, 3.0, np.float32), ([0, 0, 1, 1], [3, 7, 10, 200])), shape=(3, 300)
    )
    fresh = fold_in(y, rows, 0.1)
    np.testing.assert_allclose(fold_in(y, rows, 0.1, reuse=True), fresh, rtol=1e-6)
    np.testing.assert_allclose(fold_in(y, rows, 0.1, reuse=True), fresh, rtol=1e-6)
    kept = [solver for array, _, solver, _ in cf._SOLVERS.values() if array is y]
    assert len(kept) == 1 and kept[0].YtY is not None  # found again, not rebuilt
    assert not fresh[2].any()  # a row without items folds in to zero
    replaced = y * 2.0  # a model replaces its arrays: the new one gets its own YᵀY
    np.testing.assert_allclose(
        fold_in(replaced, rows, 0.1, reuse=True), fold_in(replaced, rows, 0.1), rtol=1e-6
    )
    assert not np.allclose(fold_in(replaced, rows, 0.1, reuse=True), fresh)


def test_fold_in_of_a_growing_array_recounts_only_its_last_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows added below a buffer's earlier view recount only YᵀY's last block, and the
    visitors fold in exactly as on the same rows counted afresh (as after a restart)."""
    monkeypatch.setattr(cf, "GRAM_BLOCK", 16)
    rng = np.random.default_rng(2)
    buf = rng.normal(size=(120, 6)).astype(np.float32)
    rows = sp.csr_matrix((np.full(3, 2.0, np.float32), ([0, 0, 1], [3, 40, 90])), shape=(2, 120))
    full_sum = None
    for n in (90, 91, 96, 97, 120):  # 96 completes a block
        view = buf[:n]
        got = fold_in(view, rows[:, :n], 0.1, reuse=True)
        np.testing.assert_array_equal(got, fold_in(buf[:n].copy(), rows[:, :n], 0.1))
        (gram,) = [g for array, g, _, _ in cf._SOLVERS.values() if array is buf]
        assert (gram.rows, gram.blocks) == (n, n // 16)
        # the sum over complete blocks is kept while no block completes (91 and 97)
        assert (gram.full is full_sum) == (n in (91, 97))
        full_sum = gram.full
    older = fold_in(buf[:50], rows[:, :50], 0.1, reuse=True)  # a shorter view: counted apart
    np.testing.assert_array_equal(older, fold_in(buf[:50].copy(), rows[:, :50], 0.1))
    assert gram.rows == 120


def test_fold_in_of_few_rows_is_serial_and_matches_the_batch() -> None:
    """Few rows are solved on the calling thread, without touching the kept solver's threads,
    and give what the same rows give in a parallel batch."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=(400, 8)).astype(np.float32)
    n = cf.PARALLEL_ROWS + 6
    rows = sp.random(n, 400, density=0.02, format="csr", random_state=1, dtype=np.float32)
    batch = fold_in(y, rows, 0.1, reuse=True)
    singles = np.vstack([fold_in(y, rows[[i]], 0.1, reuse=True) for i in range(n)])
    np.testing.assert_allclose(singles, batch, rtol=1e-5, atol=1e-6)
    kept = [solver for array, _, solver, _ in cf._SOLVERS.values() if array is y]
    assert len(kept) == 1 and kept[0].num_threads == 0


def test_profile_scores_on_candidates_match_the_full_scores(
    data: Synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidate scoring, standardised by the item moments, is the full scoring, also after
    items are added and edited; growth updates a copy of the moments, so a copy of the model
    taken before it (a service's snapshot) keeps the moments of its own arrays."""
    m = TestWarmStart.make(tmp_path).fit(data.dataset)
    assert isinstance(m, WarmStartRecommender)
    named = m.catalogue.item_ids.to_internal(data.items_of(1, cold=False)[:3])
    queries = [
        ProfileQuery(text=data.group_text(0), attribute_text=None, items=np.empty(0, np.int64)),
        ProfileQuery(text=None, attribute_text=None, items=named),
        ProfileQuery(text=data.group_text(2), attribute_text=None, items=named[:1]),
    ]

    def check() -> None:
        parts = m.profile_parts(queries)
        full = m.score_profile_parts(parts)
        np.testing.assert_array_equal(full, m.score_profiles(queries))
        cand = np.array([40, 3, 17, 0, 68, m.catalogue.n_items - 1])
        np.testing.assert_allclose(
            m.score_profile_parts(parts, cand), full[:, cand], rtol=1e-4, atol=1e-4
        )

    check()
    kept = m.item_moments()
    n, mean, cov = kept.n, kept.mean.copy(), kept.cov.copy()
    m.add_items(["new-a", "new-b"], [data.group_text(0, seed=9), data.group_text(1, seed=9)])
    m.update_item_texts(np.array([3, 3, 40]), ["edited three", "edited again", "edited forty"])

    def recount(*_: Any) -> None:
        raise AssertionError("the moments were recounted from the arrays, not updated")

    with monkeypatch.context() as patch:
        patch.setattr(hybrid_model, "ItemMoments", recount)
        moments = m.item_moments()
    assert moments is not kept and moments.n == n + 2
    assert kept.n == n
    np.testing.assert_array_equal(kept.mean, mean)
    np.testing.assert_array_equal(kept.cov, cov)
    check()


def test_added_items_leave_earlier_item_arrays_as_they_were(
    data: Synthetic, tmp_path: Path
) -> None:
    """Item arrays grow in a buffer with rows to spare: an earlier array keeps its rows, and
    the arrays are those that copying them whole at every step gives."""
    m = TestWarmStart.make(tmp_path).fit(data.dataset)
    assert isinstance(m, WarmStartRecommender)
    copied = Recommender.load(m.save(tmp_path / "saved"))
    assert isinstance(copied, WarmStartRecommender)
    names = ("item_vectors", "item_embeddings", "item_cf")
    fitted = {name: getattr(m, name) for name in names}
    before = {name: a.copy() for name, a in fitted.items()}
    n = before["item_cf"].shape[0]
    steps = [(["one"], 0), (["two", "three"], 1), (None, 0), (["four"], 2)]
    first: dict[str, np.ndarray] = {}
    for model in (m, copied):
        for ids, group in steps:
            if ids is None:  # an edit copies the arrays: the next item starts a new buffer
                model.update_item_texts(np.array([0]), ["an edited item"])
            else:
                model.add_items(ids, [data.group_text(group, seed=11 + j) for j in range(len(ids))])
            if model is copied:
                for name in names:
                    setattr(model, name, getattr(model, name).copy())
            elif not first:
                first = {name: getattr(m, name) for name in names}
    for name in names:
        np.testing.assert_array_equal(fitted[name], before[name])
        np.testing.assert_array_equal(first[name][:n], before[name])
        assert first[name].shape[0] == n + 1
        assert getattr(m, name).shape[0] == n + 4
        np.testing.assert_array_equal(first[name][1:], getattr(m, name)[1 : n + 1])
        np.testing.assert_array_equal(getattr(m, name), getattr(copied, name))


def test_item_moments_add_and_replace_match_a_recount() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 2)) + 4.0
    moments = ItemMoments(a[:40], b[:40])
    moments.add(np.hstack([a[40:], b[40:]]))
    edited = np.hstack([a[:5], b[:5]]) * 3.0
    moments.replace(np.hstack([a[:5], b[:5]]), edited)
    x = np.vstack([edited, np.hstack([a[5:], b[5:]])])
    np.testing.assert_allclose(moments.mean, x.mean(axis=0))
    np.testing.assert_allclose(moments.cov, np.cov(x, rowvar=False, bias=True), atol=1e-10)
    u, v = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    mean, sd = moments.spread(u, slice(0, 3))
    np.testing.assert_allclose(mean, (u @ x[:, :3].T).mean(axis=1))
    np.testing.assert_allclose(sd, (u @ x[:, :3].T).std(axis=1))
    cross = [np.cov(u[i] @ x[:, :3].T, v[i] @ x[:, 3:].T, bias=True)[0, 1] for i in range(4)]
    np.testing.assert_allclose(moments.covariance(u, slice(0, 3), v, slice(3, 5)), cross)
    with pytest.raises(ValueError, match="shape"):
        moments.replace(x[:2], x[:3])


def test_dense_columns_match_scipy_indexing() -> None:
    rng = np.random.default_rng(3)
    rows = sp.random(4, 50, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    for cols in (np.array([7, 0, 49, 3, 12]), np.array([5, 5, 1]), np.array([], dtype=np.int64)):
        np.testing.assert_array_equal(dense_columns(rows, cols), rows[:, cols].toarray())


@pytest.mark.parametrize("width", [40, 20_000], ids=["product", "gathered"])
def test_summed_rows_equal_the_product_to_the_bit(width: int) -> None:
    """A history's neighbour sums, gathered for a wide catalogue or multiplied for a narrow
    one: the same bits as `binary(rows) @ matrix`, a repeated or zero entry and an empty row
    included, and sums that cancel to zero left out as the product leaves them out."""
    rng = np.random.default_rng(5)
    n = 60
    at = np.repeat(np.arange(n), 4)
    values = rng.normal(size=at.size).astype(np.float32)
    columns = rng.integers(4, width, at.size)
    columns[[28, 32]], values[[28, 32]] = 3, [0.5, -0.5]  # items 7 and 8 cancel in column 3
    matrix = sp.csr_matrix((values, (at, columns)), shape=(n, width))  # duplicates summed
    rows = sp.csr_matrix(  # row 0 with a stored zero, row 1 empty, row 2 names item 1 twice
        (np.array([1, 2, 0, 1, 1, 1], np.float32), np.array([7, 8, 9, 1, 1, 4]), [0, 3, 3, 6]),
        shape=(3, n),
    )
    got = summed_rows(rows, matrix)
    expected = sp.csr_matrix(binary(rows) @ matrix, dtype=np.float32)
    got.sort_indices()
    expected.sort_indices()
    assert got.dtype == np.float32 and got.shape == (3, width)
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)
    assert got[1].nnz == 0 and got[0, 3] == 0 and 3 not in got[0].indices


def test_standardise_sparse_equals_the_dense_standardising() -> None:
    rows = sp.csr_matrix(  # row 0 names column 5 twice, row 2 is empty
        (np.array([1.0, 2.0, 0.5, -1.0], np.float32), np.array([0, 5, 5, 3]), [0, 3, 4, 4]),
        shape=(3, 10),
    )
    dense = rows.toarray()  # the repeated entry summed, as a product's row holds it
    expected = (dense - dense.mean(axis=1, keepdims=True)) / (
        dense.std(axis=1, keepdims=True) + 1e-9
    )
    np.testing.assert_allclose(standardise_sparse(rows, None), expected, rtol=1e-5, atol=1e-5)
    cols = np.array([9, 5, 0, 5])
    np.testing.assert_allclose(
        standardise_sparse(rows, cols), expected[:, cols], rtol=1e-5, atol=1e-5
    )


def test_fit_report_warns_when_item_text_is_short(data: Synthetic, tmp_path: Path) -> None:
    """Titles of two words say little about taste: `fit` says so; full descriptions do not."""
    from warmstart.data import from_frames

    titled = from_frames(
        data.interactions, data.items, data.users, item_text="{title}", user_text="{bio}"
    )
    params = {"lambda_items": 1.0, "lambda_users": 1.0, "text_profile_weight": 0.0}
    short = TestWarmStart.make(tmp_path, **params).fit(titled)
    assert any("item text is short" in line for line in short.fit_report())
    full = TestWarmStart.make(tmp_path, **params).fit(data.dataset)
    assert not any(line.startswith("warning") for line in full.fit_report())
