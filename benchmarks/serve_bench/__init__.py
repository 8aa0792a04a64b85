"""The serving load benchmark's parts; `benchmarks/bench_serve.py` is its command line.

    catalogue  the catalogues (ML-100K, synthetic-100k) and the model fitted on them, kept
    server     `warmstart serve` as a subprocess, and what is read from outside it (CPU, metrics)
    load       the open-loop load generator and its HTTP clients
    routes     the request mixes and the server-side state they need
    measure    one measured run of a route at a rate, and freshness (new item to results)
    inprocess  the profile of `Engine` calls in one process, without HTTP
    report     the table, the summary and the plot

The targets below are the issue's, shared by measuring, plotting and the summary.
"""

from __future__ import annotations

TARGET_P99_MS = 25.0
TARGET_RATE = 100.0
TARGET_FRESH_S = 1.0
