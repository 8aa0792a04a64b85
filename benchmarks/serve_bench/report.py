"""The results as a table, a summary on stdout, and a plot of p50/p99 against rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serve_bench import TARGET_P99_MS, TARGET_RATE


def fmt(x: Any, digits: int = 1) -> str:
    """A figure for the table and logs; "-" for one that could not be measured (None)."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Every run as one row, in the order run."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cols = [
        ("route", "route", 0),
        ("rate", "rate/s", 0),
        ("achieved_rate", "achieved", 1),
        ("p50_ms", "p50 ms", 1),
        ("p90_ms", "p90 ms", 1),
        ("p99_ms", "p99 ms", 1),
        ("max_ms", "max ms", 1),
        ("errors", "errors", 0),
        ("unsent", "unsent", 0),
        ("server_mean_ms", "in-app mean ms", 1),
        ("server_cpu_ms_per_req", "server CPU ms/req", 1),
        ("client_cpu_ms_per_req", "client CPU ms/req", 2),
        ("other_cores", "others' cores", 2),
    ]
    for _, head, _ in cols:
        table.add_column(head, justify="left" if head == "route" else "right")
    for row in rows:
        table.add_row(*[fmt(row.get(key), d) for key, _, d in cols])
    Console(stderr=False, width=200).print(table)


def saturated(row: dict[str, Any]) -> bool:
    """The server did not keep up: requests were dropped, or it answered under 95% of the rate."""
    rate = row["achieved_rate"]
    return row["unsent"] > 0 or rate is None or rate < 0.95 * row["rate"]


def plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """p50 and p99 against offered rate per route, log scale, with the target and overload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    names = list(dict.fromkeys(r["route"] for r in rows))
    colours = plt.get_cmap("tab10")
    for j, name in enumerate(names):
        mine = sorted((r for r in rows if r["route"] == name), key=lambda r: r["rate"])
        rates = sorted({r["rate"] for r in mine})
        c = colours(j % 10)
        for key, style, alpha in (("p99_ms", "o-", 1.0), ("p50_ms", "s--", 0.6)):
            # the median over repeats; every repeat as a faint dot
            values = [
                [r[key] for r in mine if r["rate"] == x and r[key] is not None] for x in rates
            ]
            med = [float(np.median(v)) if v else float("nan") for v in values]
            label = f"{name} {key[:3]}"
            ax.plot(rates, med, style, color=c, alpha=alpha, label=label)
            if any(len(v) > 1 for v in values):
                xs = [x for x, v in zip(rates, values, strict=True) for _ in v]
                ax.plot(xs, [y for v in values for y in v], ".", color=c, alpha=0.3)
        over = [r for r in mine if saturated(r)]
        ax.plot(
            [r["rate"] for r in over],
            [r["p99_ms"] for r in over],
            "x",
            color="k",
            ms=10,
            label="overloaded (dropped, or achieved < 95%)" if j == 0 else None,
        )
    ax.axhline(TARGET_P99_MS, color="k", lw=0.8, ls=":", label=f"target p99 {TARGET_P99_MS:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel("latency (ms, from scheduled send)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_summary(
    result: dict[str, Any], rows: list[dict[str, Any]], n_items: int, output: Path, png: Path
) -> None:
    """The table of every run, then freshness, the in-process profile, the target and the code."""
    print_table(
        f"{result['catalogue']}: {n_items:,} items, open loop over loopback "
        f"({result['machine']['nproc']} cores, {result['machine']['cpu_model']})",
        rows,
    )
    if "freshness" in result:
        for key in ("idle", "under_warm_load"):
            f = result["freshness"][key]
            print(
                f"freshness ({key}): item POST -> visible p50 {fmt(f['visible_p50_ms'])} ms, "
                f"max {fmt(f['visible_max_ms'])} ms over {f['trials']} trials "
                f"(not visible: {f['not_visible']}); POST ack p50 {fmt(f['post_ack_p50_ms'])} ms, "
                f"max {fmt(f['post_ack_max_ms'])} ms"
            )
        w = result["freshness"]["warm_load_during"]
        print(
            f"warm @ {TARGET_RATE:.0f}/s while items were POSTed: p50 {fmt(w['p50_ms'])} ms, "
            f"p99 {fmt(w['p99_ms'])} ms, max {fmt(w['max_ms'])} ms"
        )
    if "inprocess" in result and "error" in result["inprocess"]:
        print(f"in-process profile failed: {result['inprocess']['error']}")
    elif "inprocess" in result:
        ip = result["inprocess"]
        print(f"in-process ({ip['items']:,} items, {ip['index']} index, no HTTP):")
        for name, t in ip["timings"].items():
            if "p50_ms" in t:
                print(f"  {name:<72} p50 {t['p50_ms']:8.2f} ms  p99 {t['p99_ms']:8.2f} ms")
        adds = ", ".join(f"{x:.0f}" for x in ip["engine.upsert_items one item ms"])
        print(f"  engine.upsert_items, one new item: {adds} ms")
    target = result["target"]["warm_p99_ms_at_100_per_s"]
    if target:
        meets = "meets" if result["target"]["meets"] else "misses"
        print(
            f"warm users at {TARGET_RATE:.0f}/s: p99 {', '.join(f'{x:.1f}' for x in target)} ms "
            f"(median {result['target']['median']:.1f}); {meets} the {TARGET_P99_MS:.0f} ms target"
        )
    code = result["server"]["code"]
    changed = (
        f" + uncommitted changes to {code['src_changed_since']}"
        if code["src_changed_since"]
        else ""
    )
    print(f"code under test: commit {code['commit'][:10]}{changed}")
    print(f"wrote {output} and {png} in {result['wall_s']:.0f} s")
