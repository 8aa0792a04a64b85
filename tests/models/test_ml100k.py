"""Real data: warmstart on MovieLens 100K serves cold users from text, in English and Chinese."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from warmstart.data import Dataset, load_builtin
from warmstart.errors import DataNotFoundError
from warmstart.models import Recommender, WarmStartRecommender

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    try:
        return load_builtin("ml-100k")
    except DataNotFoundError:
        pytest.skip("ML-100K not found (../shared/datasets or WARMSTART_DATA)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ.get("WARMSTART_TEST_CACHE") or tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def model(ml100k: Dataset, cache: Path) -> WarmStartRecommender:
    return WarmStartRecommender(cache_dir=cache).fit(ml100k)


def _genre_share(
    ds: Dataset, model: Recommender, item_ids: list[object], genres: set[str]
) -> float:
    idx = model.catalogue.item_ids.to_internal(item_ids)
    flags = ds.item_features["genres"]
    return float(np.mean([bool(genres & set(str(flags.iat[i]).split("|"))) for i in idx]))


def test_english_profiles_get_fitting_genres(ml100k: Dataset, model: WarmStartRecommender) -> None:
    family = model.recommend_for_profile(
        text="I love animated family films and Disney musicals", k=10
    ).row(0)
    assert _genre_share(ml100k, model, [i for i, _ in family], {"Animation", "Children's"}) > 0.5
    scifi = model.recommend_for_profile(
        text="Hard science fiction about space exploration and aliens", k=10
    ).row(0)
    assert _genre_share(ml100k, model, [i for i, _ in scifi], {"Sci-Fi"}) > 0.5


def test_chinese_profile_with_multilingual_encoder(ml100k: Dataset, cache: Path) -> None:
    multi = WarmStartRecommender(encoder="multilingual", cache_dir=cache).fit(ml100k)
    recs = multi.recommend_for_profile(text="我喜欢科幻电影，特别是太空探险和外星人", k=10).row(0)
    assert _genre_share(ml100k, multi, [i for i, _ in recs], {"Sci-Fi"}) > 0.5


def test_warm_users_beat_popularity_on_held_out_ratings(ml100k: Dataset, cache: Path) -> None:
    """A quick sanity check that fitting learned something: the real benchmark is `evaluate`."""
    rng = np.random.default_rng(0)
    held = rng.random(ml100k.n_interactions) < 0.1
    train = ml100k.with_interactions(~held)
    model = WarmStartRecommender(cache_dir=cache).fit(train)
    truth = ml100k.with_interactions(held).matrix().tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    recs = model.recommend(ml100k.user_ids.to_external(users), k=10)
    hits = np.mean([truth[u, recs.items[j]].nnz / 10 for j, u in enumerate(users)])
    pop = np.argsort(-train.item_counts())
    seen = train.matrix().tocsr()
    pop_hits = np.mean(
        [truth[u, [i for i in pop[:200] if seen[u, i] == 0][:10]].nnz / 10 for u in users]
    )
    assert hits > 1.2 * pop_hits


def test_new_item_recommendable_at_once_and_round_trip(
    ml100k: Dataset, model: WarmStartRecommender, tmp_path: Path
) -> None:
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    users = list(ml100k.user_ids.external[:50])
    a, b = model.recommend(users, k=20), loaded.recommend(users, k=20)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.scores, b.scores)

    assert isinstance(loaded, WarmStartRecommender)
    loaded.cache_dir = model.cache_dir
    loaded.add_items(
        ["new-1"],
        texts=["Space Odyssey 2099. Sci-Fi. Astronauts explore a distant galaxy and meet aliens."],
    )
    recs = loaded.recommend_for_profile(text="science fiction about space and aliens", k=20).row(0)
    assert "new-1" in [i for i, _ in recs]


def test_cli_recommend_json(ml100k: Dataset, cache: Path) -> None:
    env = {**os.environ, "WARMSTART_CACHE_DIR": str(cache)}
    res = subprocess.run(
        [
            sys.executable, "-m", "warmstart.cli.main", "recommend", "--dataset", "ml-100k",
            "--profile", "Hard science fiction about space exploration and aliens",
            "--k", "10", "--format", "json",
        ],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    recs = json.loads(res.stdout)["recommendations"]
    assert len(recs) == 10 and all(isinstance(r["item_id"], int) for r in recs)
    titles = set(ml100k.item_features["title"])
    assert all(r["title"] in titles for r in recs)


def test_evaluate_cold_items(ml100k: Dataset, cache: Path, tmp_path: Path) -> None:
    """The benchmark on real data: warmstart places held-out movies by their text, baselines can't."""
    from warmstart.cli.data_options import DataSpec
    from warmstart.cli.evaluate import evaluate

    out = tmp_path / "cold-item.json"
    payload = evaluate(
        DataSpec(dataset="ml-100k", min_rating=4),
        protocol="cold-item",
        models=("popularity", "content-knn", "warmstart"),
        ks=(10,),
        cache_dir=cache,
        output=out,
        n_bootstrap=200,
        progress=False,
        log=lambda line: None,
    )
    assert json.loads(out.read_text())["results"] == payload["results"]
    cold = {
        r["model"]: r["metrics"]["ndcg@10"] for r in payload["results"] if r["segment"] == "cold"
    }
    assert cold["warmstart"] >= 1.05 * max(cold["popularity"], cold["content-knn"])
    assert payload["segments"]["cold"]["n_users"] > 500
    assert (tmp_path / "cold-item-segments.png").stat().st_size > 1000


def test_service_on_ml100k_survives_kill_9(
    ml100k: Dataset, model: WarmStartRecommender, cache: Path, tmp_path: Path
) -> None:
    """The issue's acceptance through `warmstart serve`: a text-only newcomer gets fitting genres,
    a few clicks steer a newcomer and are excluded, a posted film is recommended at once, and all
    of it is still there after SIGKILL and a restart on the same database.

    The server runs with the model's own choices on all of ML-100K's ratings: a newcomer who
    clicked five Disney cartoons must see cartoons (issue 17), although held-out NDCG alone
    would choose a popularity prior that drowns them.
    """
    import signal

    import httpx

    from tests.serve.test_serve import AUTH, free_port, serving_process

    model_dir = model.save(tmp_path / "model")
    db, port = tmp_path / "serve.db", free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"WARMSTART_CACHE_DIR": str(cache)}
    family = "I love animated children's films, cartoons and Disney musicals"
    new_film = "Nebula Run. Sci-Fi. Starship pilots race across a galaxy and meet an alien empire."

    def recs(user: str) -> dict[str, object]:
        r = httpx.get(f"{base}/v1/users/{user}/recommendations?k=10", headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def ids(body: dict[str, object]) -> list[object]:
        return [r["item_id"] for r in body["recommendations"]]  # type: ignore[attr-defined]

    args: list[str] = []
    family_genres = {"Animation", "Children's"}
    with serving_process(model_dir, db, port, env, args) as proc:
        post = httpx.post(
            f"{base}/v1/users",
            headers=AUTH,
            json={"users": [{"user_id": "family-fan", "text": family}]},
            timeout=60,
        )
        assert post.status_code == 200
        fan = recs("family-fan")
        assert fan["route"] == "text-only"
        assert _genre_share(ml100k, model, ids(fan), family_genres) > 0.5

        clicked = [50, 172, 181]  # Star Wars and its two sequels
        events = [{"user_id": "clicker", "item_id": str(i), "type": "click"} for i in clicked]
        httpx.post(f"{base}/v1/events", headers=AUTH, json={"events": events}, timeout=60)
        clicker = recs("clicker")
        assert clicker["route"] == "few-shot"
        assert not set(ids(clicker)) & set(clicked)
        assert _genre_share(ml100k, model, ids(clicker), {"Sci-Fi", "Adventure", "Action"}) > 0.5
        explained = [r["explanation"] for r in clicker["recommendations"]]  # type: ignore[attr-defined]
        assert all({n["item_id"] for n in e["neighbours"]} <= set(clicked) for e in explained)

        cartoons = [
            1,
            95,
            71,
            588,
            99,
        ]  # Toy Story, Aladdin, Lion King, Beauty and the Beast, Snow White
        events = [{"user_id": "cartoon-fan", "item_id": str(i), "type": "click"} for i in cartoons]
        httpx.post(f"{base}/v1/events", headers=AUTH, json={"events": events}, timeout=60)
        cartoon_fan = recs("cartoon-fan")
        assert cartoon_fan["route"] == "few-shot"
        assert _genre_share(ml100k, model, ids(cartoon_fan), family_genres) >= 0.5

        item = {"item_id": "nebula-run", "text": new_film}
        httpx.post(f"{base}/v1/items", headers=AUTH, json={"items": [item]}, timeout=60)
        visitor = httpx.post(
            f"{base}/v1/recommendations",
            headers=AUTH,
            json={"text": "science fiction about starships, space and aliens", "k": 20},
            timeout=60,
        ).json()
        assert "nebula-run" in ids(visitor)
        # scores are standardised over the catalogue, which the new film joined: look again
        fan, clicker, cartoon_fan = recs("family-fan"), recs("clicker"), recs("cartoon-fan")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    with serving_process(model_dir, db, port, env, args):
        assert recs("family-fan") == fan
        assert recs("clicker") == clicker
        assert recs("cartoon-fan") == cartoon_fan
        assert _genre_share(ml100k, model, ids(cartoon_fan), family_genres) >= 0.5
        again = httpx.post(
            f"{base}/v1/recommendations",
            headers=AUTH,
            json={"text": "science fiction about starships, space and aliens", "k": 20},
            timeout=60,
        ).json()
        assert again == visitor
