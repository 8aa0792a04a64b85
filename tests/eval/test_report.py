"""The results report: Markdown tables (bold best, rmse lowest-is-best, significance) and PNG plots."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from warmstart.eval.report import (
    REFERENCE,
    _lines,
    _step_label,
    _style,
    _who,
    default_metrics,
    markdown_table,
    plot_all,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("warmstart", "als", "popularity")


def _result(
    model: str,
    segment: str,
    n_users: int,
    values: tuple[float, float, float, float, float],
    rmse: float | None = None,
    p_value: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """One result row; every ci95 is the value ±0.01 so the half-width is known."""
    r10, n10, r20, n20, auc = values
    metrics: dict[str, float] = {
        "recall@10": r10,
        "ndcg@10": n10,
        "recall@20": r20,
        "ndcg@20": n20,
        "precision@10": r10 / 4,
        "auc": auc,
        "coverage@10": 0.5,
    }
    if rmse is not None:
        metrics["rmse"] = rmse
        metrics["mae"] = rmse * 0.8
    ci95 = {k: [v - 0.01, v + 0.01] for k, v in metrics.items() if not k.startswith("coverage")}
    return {
        "model": model,
        "segment": segment,
        "n_users": n_users,
        "metrics": metrics,
        "ci95": ci95,
        "p_value": p_value,
        "best_other": {},
        "fit_seconds": 12.34,
        "recommend_seconds": 0.5,
    }


def cold_user_payload() -> dict[str, Any]:
    rows = [
        # zero-shot: warmstart best on recall@20 (significant); als lowest rmse.
        _result("warmstart", "zero-shot", 100, (0.21, 0.15, 0.30, 0.18, 0.90), 1.05,
                {"recall@20": 0.001, "rmse": 0.5}),
        _result("als", "zero-shot", 100, (0.02, 0.01, 0.05, 0.02, 0.55), 0.92,
                {"rmse": 0.01}),
        _result("popularity", "zero-shot", 100, (0.10, 0.08, 0.12, 0.09, 0.70), 1.30),
        # fewshot-1: warmstart best on recall@20 but not significantly.
        _result("warmstart", "fewshot-1", 90, (0.25, 0.17, 0.33, 0.20, 0.91), 1.00,
                {"recall@20": 0.2}),
        _result("als", "fewshot-1", 90, (0.10, 0.07, 0.15, 0.09, 0.80), 0.95),
        _result("popularity", "fewshot-1", 90, (0.10, 0.08, 0.12, 0.09, 0.70), 1.30),
        # fewshot-3: als overtakes (significant); popularity's small p does not matter, it is not best.
        _result("warmstart", "fewshot-3", 80, (0.28, 0.19, 0.36, 0.22, 0.92), 0.98),
        _result("als", "fewshot-3", 80, (0.30, 0.21, 0.40, 0.25, 0.93), 0.90,
                {"recall@20": 0.01}),
        _result("popularity", "fewshot-3", 80, (0.10, 0.08, 0.12, 0.09, 0.70), 1.30,
                {"recall@20": 0.001}),
    ]  # fmt: skip
    return {
        "dataset": "toy",
        "protocol": "cold-user",
        "seed": 0,
        "ks": [10, 20],
        "primary_metric": "recall@20",
        "machine": {},
        "notes": [],
        "results": rows,
    }


def cold_item_payload() -> dict[str, Any]:
    rows = []
    for segment, n_users, segment_scale in (("cold", 40, 1.0), ("all", 120, 0.8)):
        for model, model_scale in zip(MODELS, (1.0, 0.7, 0.4), strict=True):
            f = segment_scale * model_scale
            values = (0.2 * f, 0.15 * f, 0.3 * f, 0.2 * f, 0.9 * f)
            rows.append(_result(model, segment, n_users, values))
    return {
        "dataset": "toy",
        "protocol": "cold-item",
        "seed": 0,
        "ks": [10, 20, 50],
        "primary_metric": "recall@20",
        "results": rows,
    }


def _tables(markdown: str) -> dict[str, tuple[list[str], dict[str, dict[str, str]]]]:
    """Parse the report back: heading -> (header cells, {model: {column: cell}})."""
    tables: dict[str, tuple[list[str], dict[str, dict[str, str]]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading = line[4:]
            tables[heading] = ([], {})
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            header, rows = tables[heading]
            if not header:
                header.extend(cells)
            elif not set(cells[0]) <= {"-", ":"}:
                rows[cells[0]] = dict(zip(header, cells, strict=True))
    return tables


def test_markdown_has_one_table_per_segment_with_default_columns() -> None:
    tables = _tables(markdown_table(cold_user_payload()))
    assert list(tables) == ["zero-shot (100 users)", "fewshot-1 (90 users)", "fewshot-3 (80 users)"]
    for header, rows in tables.values():
        assert header == [
            "model", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "auc", "rmse", "fit s", "rec s",
        ]  # fmt: skip
        assert list(rows) == list(MODELS)  # models in the order given
        assert rows["warmstart"]["fit s"] == "12.3"
        assert rows["warmstart"]["rec s"] == "0.50"


def test_markdown_bolds_best_and_marks_significance_for_best_only() -> None:
    tables = _tables(markdown_table(cold_user_payload()))
    zero = tables["zero-shot (100 users)"][1]
    assert zero["warmstart"]["recall@20"] == "**0.3000** ±0.0100 *"
    assert zero["popularity"]["recall@20"] == "0.1200 ±0.0100"
    assert zero["als"]["recall@20"] == "0.0500 ±0.0100"
    # Not significant: bold, no star.
    assert tables["fewshot-1 (90 users)"][1]["warmstart"]["recall@20"] == "**0.3300** ±0.0100"
    three = tables["fewshot-3 (80 users)"][1]
    assert three["als"]["recall@20"] == "**0.4000** ±0.0100 *"
    assert three["warmstart"]["recall@20"] == "0.3600 ±0.0100"
    assert three["popularity"]["recall@20"] == "0.1200 ±0.0100"  # small p, but not the best
    assert three["als"]["auc"] == "**0.9300** ±0.0100"


def test_markdown_rmse_lowest_is_best() -> None:
    zero = _tables(markdown_table(cold_user_payload()))["zero-shot (100 users)"][1]
    assert zero["als"]["rmse"] == "**0.9200** ±0.0100 *"
    assert "**" not in zero["warmstart"]["rmse"]  # warmstart's p < 0.05 is ignored, not best
    assert "**" not in zero["popularity"]["rmse"]
    payload = cold_user_payload()
    md = markdown_table(payload, ["mae", "auc"])
    zero = _tables(md)["zero-shot (100 users)"][1]
    assert zero["als"]["mae"].startswith(f"**{0.92 * 0.8:.4f}**")
    assert zero["warmstart"]["auc"].startswith("**0.9000**")


def test_markdown_lines_align_in_a_terminal() -> None:
    for block in markdown_table(cold_user_payload()).split("### ")[1:]:
        table = [line for line in block.splitlines() if line.startswith("|")]
        assert len(table) == 2 + len(MODELS)
        assert len({len(line) for line in table}) == 1


def test_markdown_explicit_metrics_missing_values_and_no_ratings() -> None:
    payload = cold_item_payload()
    # ks has 50 but no result has @50 values; no rmse without ratings.
    assert default_metrics(payload) == ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "auc"]
    tables = _tables(markdown_table(payload, ["precision@10", "mrr@10"]))
    assert list(tables) == ["cold (40 users)", "all (120 users)"]
    header, rows = tables["cold (40 users)"]
    assert header == ["model", "precision@10", "mrr@10", "fit s", "rec s"]
    assert rows["warmstart"]["precision@10"] == "**0.0500** ±0.0100"
    assert rows["als"]["mrr@10"] == "-"
    assert markdown_table({"results": []}) == ""


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.mark.parametrize(
    ("payload", "kinds"),
    [
        (cold_user_payload(), ["metrics-at-k", "fewshot", "segments"]),
        (cold_item_payload(), ["metrics-at-k", "segments"]),
    ],
    ids=["cold-user", "cold-item"],
)
def test_plots_are_written_as_png(
    payload: dict[str, Any], kinds: list[str], tmp_path: Path
) -> None:
    written = plot_all(payload, tmp_path / "toy-run")
    assert written == [tmp_path / f"toy-run-{kind}.png" for kind in kinds]
    assert sorted(tmp_path.iterdir()) == sorted(written)  # no temporary files left behind
    for path in written:
        width, height = _png_size(path)
        assert width >= 500 and height >= 400
        assert path.stat().st_size > 10_000


def test_fewshot_plot_needs_two_cold_user_steps(tmp_path: Path) -> None:
    payload = cold_user_payload()
    payload["ks"] = [20]  # one model, one step, one cut-off: the smallest figures, to stay fast
    payload["results"] = [r for r in payload["results"] if r["segment"] == "zero-shot"][:1]
    written = plot_all(payload, tmp_path / "one")
    assert [p.name for p in written] == ["one-metrics-at-k.png", "one-segments.png"]
    assert plot_all({"protocol": "cold-user", "results": []}, tmp_path / "empty") == []


def test_identical_curves_share_one_line_and_random_is_the_reference() -> None:
    payload = cold_user_payload()
    for row in list(payload["results"]):
        if row["model"] == "popularity":  # a twin that every point ties
            payload["results"].append({**row, "model": "most-rated"})
        if row["model"] == "als":
            payload["results"].append({**row, "model": REFERENCE})
    models = ["warmstart", "als", "popularity", "most-rated", REFERENCE]
    by = {(r["model"], r["segment"]): r for r in payload["results"]}
    segments = ["zero-shot", "fewshot-1", "fewshot-3"]
    lines = _lines(models, lambda m: [(by.get((m, s)), "recall@20") for s in segments])
    assert lines == [
        ("warmstart", "warmstart"),
        ("als = random (reference)", REFERENCE),
        ("popularity = most-rated", "popularity"),
    ]
    assert _style(REFERENCE, {})["linestyle"] == "--"


def test_fewshot_ticks_say_how_many_users_stand_behind_each_point() -> None:
    results = [r for r in cold_user_payload()["results"] if r["segment"] == "fewshot-3"]
    assert _step_label(3, results) == "3\n80 users"


def test_fewshot_plot_says_whether_its_points_are_the_same_users() -> None:
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for row in cold_user_payload()["results"]:
        by_segment.setdefault(row["segment"], []).append(row)
    steps = [(0, by_segment["zero-shot"]), (1, by_segment["fewshot-1"])]
    assert _who(steps).startswith("each point stands for its own users")  # 100 and 90
    same = [(n, [{**r, "n_users": 50} for r in rs]) for n, rs in steps]
    assert _who(same).startswith("the same users at every point")
