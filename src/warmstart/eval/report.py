"""Human-readable views of a `warmstart evaluate` results payload: Markdown tables and PNG plots.

Both work from the results JSON alone (no models, no data), so a report can be redrawn from a
saved run. Plots use matplotlib's object API with the Agg canvas: no pyplot, so no global figure
registry and no backend switch that could surprise other code in the same process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.plots import figure, save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LOWER_IS_BETTER: frozenset[str] = frozenset({"rmse", "mae"})
SIGNIFICANCE = 0.05
_FEWSHOT = re.compile(r"fewshot-(\d+)")
_MISSING = "-"

Result = Mapping[str, Any]


# --------------------------------------------------------------------------- payload helpers


def _number(value: Any) -> float | None:
    """A finite float, or None: results may hold None/NaN where a metric could not be computed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _value(result: Result, metric: str) -> float | None:
    return _number((result.get("metrics") or {}).get(metric))


def _interval(result: Result, metric: str) -> tuple[float, float] | None:
    pair = (result.get("ci95") or {}).get(metric)
    if not isinstance(pair, Sequence) or len(pair) != 2:
        return None
    lo, hi = _number(pair[0]), _number(pair[1])
    return None if lo is None or hi is None else (lo, hi)


def _p_value(result: Result, metric: str) -> float | None:
    return _number((result.get("p_value") or {}).get(metric))


def _segments(payload: Mapping[str, Any]) -> dict[str, list[Result]]:
    """Results grouped by segment, segments and models both in the order the runner wrote them."""
    groups: dict[str, list[Result]] = {}
    for result in payload.get("results") or []:
        groups.setdefault(str(result.get("segment", "")), []).append(result)
    return groups


def _models(payload: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(str(r.get("model", "")) for r in payload.get("results") or []))


def _has_metric(payload: Mapping[str, Any], metric: str) -> bool:
    return any(_value(r, metric) is not None for r in payload.get("results") or [])


def _ks(payload: Mapping[str, Any]) -> list[int]:
    return [int(k) for k in payload.get("ks") or []]


def _primary_metric(payload: Mapping[str, Any]) -> str:
    """The run's headline metric; ndcg@10 when it is unset or absent from every result."""
    for metric in (payload.get("primary_metric"), "ndcg@10"):
        if isinstance(metric, str) and _has_metric(payload, metric):
            return metric
    return "ndcg@10"


def _users(segment: str, results: Sequence[Result]) -> str:
    """A segment label with its size, e.g. `cold (5131 users)`."""
    n_users = results[0].get("n_users") if results else None
    return segment + (f" ({n_users} users)" if n_users is not None else "")


def _title(payload: Mapping[str, Any]) -> str:
    return f"{payload.get('dataset', '?')}, {payload.get('protocol', '?')} protocol"


# --------------------------------------------------------------------------- Markdown


def default_metrics(payload: Mapping[str, Any]) -> list[str]:
    """recall@k and ndcg@k per cut-off, then auc, then rmse when the data had ratings."""
    metrics = [f"{name}@{k}" for k in _ks(payload) for name in ("recall", "ndcg")]
    metrics.append("auc")
    if _has_metric(payload, "rmse"):
        metrics.append("rmse")
    return [m for m in metrics if _has_metric(payload, m)]


def _best(values: Sequence[float | None], metric: str) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if metric in LOWER_IS_BETTER else max(present)


def _metric_cell(result: Result, metric: str, best: float | None) -> str:
    value = _value(result, metric)
    if value is None:
        return _MISSING
    text = f"{value:.4f}"
    is_best = best is not None and value == best
    if is_best:
        text = f"**{text}**"
    interval = _interval(result, metric)
    if interval is not None:
        text += f" ±{(interval[1] - interval[0]) / 2:.4f}"
    p = _p_value(result, metric)
    if is_best and p is not None and p < SIGNIFICANCE:
        text += " *"
    return text


def _seconds(value: Any) -> str:
    seconds = _number(value)
    if seconds is None:
        return _MISSING
    digits = 0 if seconds >= 100 else 1 if seconds >= 10 else 2  # three significant-ish figures
    return f"{seconds:.{digits}f}"


def _render(header: list[str], rows: list[list[str]]) -> list[str]:
    """Pipe table padded to equal widths so it reads in a terminal as well as rendered.

    Numeric columns are right-aligned; cells without the significance star get two trailing
    spaces in a column that has one, so the decimals still line up.
    """
    for c in range(1, len(header)):
        if any(row[c].endswith(" *") for row in rows):
            for row in rows:
                if not row[c].endswith(" *"):
                    row[c] += "  "
    widths = [max(3, *(len(cell) for cell in col)) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c])
            for c, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]
    return [line(header), line(rule), *(line(row) for row in rows)]


def markdown_table(payload: Mapping[str, Any], metrics: Sequence[str] | None = None) -> str:
    """One table per segment: models as rows, each metric as `mean ±95 % CI half-width`.

    The best value of each metric column is bold (lowest for rmse/mae); a trailing `*` marks it as
    significantly better (p < 0.05, paired test) than the best other model. `metrics` defaults to
    `default_metrics(payload)`.
    """
    chosen = list(metrics) if metrics is not None else default_metrics(payload)
    header = ["model", *chosen, "fit s", "rec s"]
    blocks: list[str] = []
    for segment, results in _segments(payload).items():
        bests = {m: _best([_value(r, m) for r in results], m) for m in chosen}
        rows = [
            [
                str(r.get("model", "")).replace("|", "\\|"),
                *(_metric_cell(r, m, bests[m]) for m in chosen),
                _seconds(r.get("fit_seconds")),
                _seconds(r.get("recommend_seconds")),
            ]
            for r in results
        ]
        blocks.append("\n".join([f"### {_users(segment, results)}", "", *_render(header, rows)]))
    if not blocks:
        return ""
    note = (
        "Mean ±95 % CI half-width; **bold**: best per column (lowest for rmse/mae); "
        f"`*`: p < {SIGNIFICANCE} against the best other model (paired test)."
    )
    return "\n\n".join([*blocks, note]) + "\n"


# --------------------------------------------------------------------------- plots


REFERENCE = "random"  # the model drawn as the reference line: what chance alone scores


def _colors(models: Sequence[str]) -> dict[str, Any]:
    """One fixed colour per model, shared by every plot of the run; grey is kept for the
    reference line (tab10 without its grey, while that is enough)."""
    from matplotlib import colormaps

    drawn = [m for m in models if m != REFERENCE]
    if len(drawn) <= 9:
        palette = [colormaps["tab10"](i) for i in range(10) if i != 7]
    else:
        palette = [colormaps["tab20"](i) for i in range(20)]
    colors: dict[str, Any] = {m: palette[i % len(palette)] for i, m in enumerate(drawn)}
    colors[REFERENCE] = "0.3"
    return colors


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _lines(
    models: Sequence[str], points_of: Callable[[str], Sequence[tuple[Result | None, str]]]
) -> list[tuple[str, str]]:
    """(legend label, model drawn) per line. Models with the same value at every point would
    hide each other, so they share one line named "a = b"; the random model, where present, is
    labelled as the reference."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for i, model in enumerate(models):
        key: tuple[Any, ...] = tuple(
            None if r is None else _value(r, metric) for r, metric in points_of(model)
        )
        if all(v is None for v in key):
            key = ("absent", i)
        groups.setdefault(key, []).append(model)
    lines = []
    for group in groups.values():
        label = " = ".join(group)
        if REFERENCE in group:
            label += " (reference)"
        lines.append((label, REFERENCE if REFERENCE in group else group[0]))
    return lines


def _style(model: str, colors: Mapping[str, Any]) -> dict[str, Any]:
    """Colour, line and marker of a model's line: each model its own marker, so curves that
    coincide in one panel stay told apart; the reference dashed."""
    if model == REFERENCE:
        return {"color": colors.get(REFERENCE, "0.3"), "linestyle": "--", "marker": "."}
    marker = _MARKERS[list(colors).index(model) % len(_MARKERS)] if model in colors else "o"
    return {"color": colors[model], "linestyle": "-", "marker": marker}


def _errorbar(
    ax: Axes,
    points: Sequence[tuple[float, Result | None, str]],
    label: str,
    color: Any,
    linestyle: str = "-",
    marker: str = "o",
) -> None:
    """One line with markers and asymmetric ci95 bars through (x, result, metric) points.

    Points whose result or metric is missing are skipped, so a model absent from one segment
    still draws the others.
    """
    kept = []
    for x, result, metric in points:
        value = None if result is None else _value(result, metric)
        if result is None or value is None:
            continue
        lo, hi = _interval(result, metric) or (value, value)
        kept.append((x, value, max(value - lo, 0.0), max(hi - value, 0.0)))
    if not kept:
        return
    xs, ys, below, above = zip(*kept, strict=True)
    ax.errorbar(
        xs,
        ys,
        yerr=[below, above],
        label=label,
        color=color,
        linestyle=linestyle,
        marker=marker,
        markersize=4,
        capsize=3,
        linewidth=1.5,
    )


def _dodge(n: int, i: int, step: float) -> float:
    """Offset of series `i` of `n`, so the error bars of neighbouring models do not overlap."""
    return (i - (n - 1) / 2) * step


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One figure legend for all panels, outside them so it never hides a line."""
    entries: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="outside right center",
            title="model",
            fontsize="small",
        )


def _plot_metrics_at_k(payload: Mapping[str, Any], path: Path) -> Path | None:
    """recall@k (top row) and ndcg@k (bottom row) against k, one column of panels per segment."""
    ks = sorted(
        k
        for k in set(_ks(payload))
        if any(_has_metric(payload, f"{n}@{k}") for n in ("recall", "ndcg"))
    )
    groups = _segments(payload)
    if not ks or not groups:
        return None
    models = _models(payload)
    colors = _colors(models)
    fig = figure(max(7.0, 3.4 * len(groups) + 1.8), 6.2)
    axes = fig.subplots(2, len(groups), sharex=True, sharey="row", squeeze=False)
    log_x = len(ks) > 1 and max(ks) / min(ks) >= 4
    span = max(ks) - min(ks) or 1

    def result(model: str, results: Sequence[Result]) -> Result | None:
        return next((r for r in results if str(r.get("model", "")) == model), None)

    lines = _lines(
        models,
        lambda m: [
            (result(m, rs), f"{n}@{k}")
            for rs in groups.values()
            for n in ("recall", "ndcg")
            for k in ks
        ],
    )
    for col, (segment, results) in enumerate(groups.items()):
        for row, name in enumerate(("recall", "ndcg")):
            ax = axes[row][col]
            for i, (label, model) in enumerate(lines):
                shift = _dodge(len(lines), i, 0.012 if log_x else 0.012 * span)
                points = [
                    (k * 10**shift if log_x else k + shift, result(model, results), f"{name}@{k}")
                    for k in ks
                ]
                _errorbar(ax, points, label, **_style(model, colors))
            if log_x:
                ax.set_xscale("log")
                ax.minorticks_off()
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(_users(segment, results), fontsize="medium")
            else:
                ax.set_xlabel("k (list length)")
            if col == 0:
                ax.set_ylabel(f"{name}@k")
    _legend(fig, list(axes.flat))
    fig.suptitle(f"{_title(payload)}\nrecall@k and ndcg@k per segment (95 % CI)")
    return save_png(fig, path)


def _revealed(segment: str) -> int | None:
    """Items revealed per cold user: 0 for zero-shot, N for fewshot-N, None for other segments."""
    if segment == "zero-shot":
        return 0
    match = _FEWSHOT.fullmatch(segment)
    return int(match.group(1)) if match else None


def _plot_fewshot(payload: Mapping[str, Any], path: Path) -> Path | None:
    """Primary metric against the number of revealed items: how fast a cold user warms up."""
    steps = sorted(
        (
            (n, results)
            for segment, results in _segments(payload).items()
            if (n := _revealed(segment)) is not None
        ),
        key=lambda step: step[0],
    )
    if len(steps) < 2:
        return None
    metric = _primary_metric(payload)
    models = _models(payload)
    colors = _colors(models)
    ns = [n for n, _ in steps]
    span = max(ns) - min(ns) or 1

    def result(model: str, results: Sequence[Result]) -> Result | None:
        return next((r for r in results if str(r.get("model", "")) == model), None)

    lines = _lines(models, lambda m: [(result(m, rs), metric) for _, rs in steps])
    fig = figure(7.5, 4.8)
    ax = fig.subplots()
    for i, (label, model) in enumerate(lines):
        shift = _dodge(len(lines), i, 0.012 * span)
        points = [(n + shift, result(model, rs), metric) for n, rs in steps]
        _errorbar(ax, points, label, **_style(model, colors))
    ax.set_xticks(ns, [_step_label(n, rs) for n, rs in steps])
    ax.set_xlabel("items revealed per cold user (0 = zero-shot)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    _legend(fig, [ax])
    fig.suptitle(f"{_title(payload)}: {metric} as cold users reveal items (95 % CI)\n{_who(steps)}")
    return save_png(fig, path)


def _who(steps: Sequence[tuple[int, Sequence[Result]]]) -> str:
    """Whom the few-shot points stand for: the same users at every step, or not."""
    sizes = {rs[0].get("n_users") if rs else None for _, rs in steps}
    if len(sizes) == 1 and None not in sizes:
        return "the same users at every point; their first N items revealed are no longer tested"
    return "each point stands for its own users (how many: under each step)"


def _step_label(n: int, results: Sequence[Result]) -> str:
    """A few-shot step's tick: N revealed, and how many users stand behind the point."""
    n_users = results[0].get("n_users") if results else None
    return f"{n}\n{n_users:,} users" if isinstance(n_users, int) else str(n)


def _plot_segments(payload: Mapping[str, Any], path: Path) -> Path | None:
    """Grouped bars: the primary metric per model, one bar per segment (cold vs all, ...)."""
    groups = _segments(payload)
    if payload.get("protocol") == "cold-item" and {"cold", "all"} <= groups.keys():
        groups = {name: groups[name] for name in ("cold", "all")}
    metric = _primary_metric(payload)
    models = _models(payload)
    if not groups or not models or not _has_metric(payload, metric):
        return None
    from matplotlib import colormaps

    cmap = colormaps["Set2"]
    width = 0.8 / len(groups)
    fig = figure(max(6.0, 1.5 + len(models) * (0.5 + 0.35 * len(groups))), 4.5)
    ax = fig.subplots()
    for j, (segment, results) in enumerate(groups.items()):
        by_model = {str(r.get("model", "")): r for r in results}
        xs, heights, below, above = [], [], [], []
        for i, model in enumerate(models):
            result = by_model.get(model)
            value = None if result is None else _value(result, metric)
            if result is None or value is None:
                continue
            lo, hi = _interval(result, metric) or (value, value)
            xs.append(i + _dodge(len(groups), j, width))
            heights.append(value)
            below.append(max(value - lo, 0.0))
            above.append(max(hi - value, 0.0))
        ax.bar(
            xs,
            heights,
            width=width * 0.95,
            yerr=[below, above],
            capsize=3,
            label=_users(segment, results),
            color=cmap(j % cmap.N),
            edgecolor="black",
            linewidth=0.5,
        )
    tilt = len(models) > 5
    ax.set_xticks(
        range(len(models)), models, rotation=20 if tilt else 0, ha="right" if tilt else "center"
    )
    ax.set_ylabel(metric)
    ax.set_xlabel("model")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(title="segment", fontsize="small")
    fig.suptitle(f"{_title(payload)}: {metric} per segment (95 % CI)")
    return save_png(fig, path)


def plot_all(payload: Mapping[str, Any], out_prefix: str | Path) -> list[Path]:
    """Write every plot that fits the payload as `<out_prefix>-<kind>.png`; return their paths.

    Kinds: `metrics-at-k` (always), `fewshot` (cold-user runs with at least two of the zero-shot /
    fewshot-N segments) and `segments` (primary metric per model and segment). Each PNG is written
    atomically, so a reader never sees a half-written image.
    """
    out_prefix = Path(out_prefix)
    written: list[Path] = []
    for kind, plot in (
        ("metrics-at-k", _plot_metrics_at_k),
        ("fewshot", _plot_fewshot),
        ("segments", _plot_segments),
    ):
        path = plot(payload, out_prefix.with_name(f"{out_prefix.name}-{kind}.png"))
        if path is not None:
            written.append(path)
    return written
