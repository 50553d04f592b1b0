"""The one table (rich) and the JSON file."""

# ruff: noqa: RUF001  (the en dash of ranges and the multiplication sign of ratios are meant)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.scenarios import BASELINE, IMPLS
from benchmarks.stats import ratio


def _cell(scenario: str, s: dict[str, Any]) -> tuple[str, str]:
    """The figure and its spread, as text."""
    if scenario == "latency":
        return (
            f"p50 {s['p50']:.1f} · p95 {s['p95']:.1f} · p99 {s['p99']:.1f} ms",
            f"{s.get('rate', 0):,.0f} msg/s",
        )
    if scenario == "memory":
        return (
            f"RSS {s.get('rss_early_mb', 0):.0f} → {s.get('rss_end_mb', 0):.0f} MB "
            f"(spread {s.get('rss_spread_pct', 0):.1f} %)",
            f"{s.get('rate', 0):,.0f} msg/s",
        )
    spread = ""
    if s.get("runs", 0) > 1:
        spread = f"{s['rate_min']:,.0f}–{s['rate_max']:,.0f}"
    return f"{s['rate']:,.0f} msg/s", spread


def _ratio(scenario: str, s: dict[str, Any], base: dict[str, Any] | None) -> str:
    if not base or not base.get("ok"):
        return "–"
    if scenario == "latency":
        r = ratio(s.get("p99"), base.get("p99"))
        return f"p99 {r:.2f}×" if r is not None else "–"
    if scenario == "memory":
        r = ratio(s.get("rss_max_mb"), base.get("rss_max_mb"))
        return f"RSS {r:.2f}×" if r is not None else "–"
    r = ratio(s.get("rate"), base.get("rate"))
    return f"{r:.2f}×" if r is not None else "–"


def table(cases: list[dict[str, Any]], unavailable: dict[str, str]) -> Table:
    """One row per case and implementation."""
    t = Table(title="rabbitflow benchmarks (medians; ratio to raw aio-pika in the same case)")
    for name in ("case", "implementation", "result", "spread", "vs aio-pika", "peak RSS"):
        t.add_column(name, justify="left" if name in ("case", "implementation") else "right")
    for case in cases:
        summaries = case["summary"]
        base = summaries.get(BASELINE) or summaries.get(case["impls"][0])
        first = True
        for key in case["impls"]:
            s = summaries[key]
            label = IMPLS[key].label
            name = f"{case['scenario']}: {case['variant']}" if first else ""
            first = False
            if not s.get("ok"):
                if key in unavailable:
                    text = "not available"
                elif s.get("unavailable"):
                    text = f"not available ({s['reason']})"
                else:
                    text = f"failed ({s.get('reason')})"
                t.add_row(name, label, text, "", "", "")
                continue
            figure, spread = _cell(case["scenario"], s)
            rss = f"{s['rss_peak_mb']:.0f} MB" if s.get("rss_peak_mb") else ""
            t.add_row(
                name,
                label,
                figure,
                spread,
                "1.00×" if key == BASELINE else _ratio(case["scenario"], s, base),
                rss,
            )
        t.add_section()
    return t


def show(cases: list[dict[str, Any]], unavailable: dict[str, str], console: Console) -> None:
    """Print the table and the unavailable implementations."""
    console.print(table(cases, unavailable))
    for key, reason in unavailable.items():
        console.print(f"{key}: not available ({reason})")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write the results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
