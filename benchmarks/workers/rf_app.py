"""The app ``rabbitflow run benchmarks.workers.rf_app:app --processes N`` runs.

Configured from ``BENCH_SPEC`` (the harness's JSON spec); each process writes its counters
to ``$BENCH_STATS_DIR/<pid>.json`` once idle.
"""

from __future__ import annotations

import json
import os

from benchmarks.workers.common import IdleStats, Order
from rabbitflow import App

_spec = json.loads(os.environ["BENCH_SPEC"])
_stats = IdleStats()

app = App(topology=_spec["topology"])


@app.handler(_spec["queue"], prefetch=_spec["prefetch"])
async def handle(order: Order) -> None:
    """No-op handler."""
    _stats.hit()
