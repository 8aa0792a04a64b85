"""`warmstart demo`: the product in one screen, on MovieLens 100K."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from warmstart.data import Dataset, load_builtin
from warmstart.models import Recommendations, WarmStartRecommender

ENGLISH = "I love animated family films and Disney musicals"
CHINESE = "我喜欢科幻电影，特别是太空探险和外星人"  # "I love sci-fi, especially space exploration and aliens"
NEW_MOVIE = (
    "A shy orphan discovers he is a wizard and goes to a school of magic, where he makes friends "
    "and confronts the dark sorcerer who killed his parents."
)
WARM_USER = 1


def _table(
    console: Console, title: str, recs: Recommendations, ds: Dataset, model: WarmStartRecommender
) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("movie")
    table.add_column("genres", style="cyan")
    table.add_column("score", justify="right")
    genres = ds.item_features["genres"] if "genres" in ds.item_features.columns else None
    for n, (item, score) in enumerate(zip(recs.items[0], recs.scores[0], strict=True), 1):
        if item < 0:
            continue
        g = str(genres.iat[item]).replace("|", ", ") if genres is not None else ""
        table.add_row(str(n), model.catalogue.titles[item], g, f"{score:.2f}")
    console.print(table)


def run_demo(console: Console, *, data_dir: Path | None, cache_dir: Path | None, k: int) -> None:
    ds = load_builtin("ml-100k", data_dir)
    console.rule("[bold]warmstart demo: MovieLens 100K")
    console.print(
        f"{ds.n_users} users, {ds.n_items} movies, {ds.n_interactions:,} ratings. Movie text: "
        f"title, genres and plot. User text: demographics.\n"
    )
    start = time.perf_counter()
    model = WarmStartRecommender(cache_dir=cache_dir).fit(ds)
    console.print(
        f"fitted warmstart (MiniLM encoder) in {time.perf_counter() - start:.1f} s; "
        f"blend weights chosen on validation: lambda_items={model.lambda_items_:g}, "
        f"lambda_users={model.lambda_users_:g}\n"
    )
    from warmstart.models import Profile

    english = model.recommend_for_profiles([Profile(text=ENGLISH)], k=k)
    _table(console, f"1. A new user, no history, in English: {ENGLISH!r}", english, ds, model)

    console.print("\n[dim]fitting a second model with the multilingual encoder (USE v3)...[/dim]")
    multi = WarmStartRecommender(encoder="multilingual", cache_dir=cache_dir).fit(ds)
    chinese = multi.recommend_for_profiles([Profile(text=CHINESE)], k=k)
    _table(
        console,
        f"2. A new user, in Chinese: {CHINESE} (I love sci-fi, space and aliens)",
        chinese,
        ds,
        multi,
    )

    seen = ds.matrix()[ds.user_ids.to_internal([WARM_USER])[0]]
    favourites = seen.indices[seen.data >= 5][:5]
    console.print(
        f"\n3. Warm user {WARM_USER} ({ds.user_text[ds.user_ids.to_internal([WARM_USER])[0]]}) has rated "
        f"{seen.nnz} movies, loved e.g. " + "; ".join(ds.item_title(i) for i in favourites)
    )
    warm = model.recommend([WARM_USER], k=k)
    _table(console, f"   top {k} for user {WARM_USER} (seen movies excluded)", warm, ds, model)

    similar = model.similar_items(text=[NEW_MOVIE], k=k)
    _table(
        console,
        f"\n4. Movies most similar to a new movie known only by its description:\n   {NEW_MOVIE!r}",
        similar,
        ds,
        model,
    )

    top = warm.row(0)[0][0]
    explanation = model.explain(WARM_USER, top)
    console.print(f"\n5. Why {model.catalogue.titles[warm.items[0, 0]]!r} for user {WARM_USER}?")
    console.print(f"   {explanation.summary()}")
    console.rule()
