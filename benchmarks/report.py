"""The one table (rich) and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.scenarios import BASELINE, IMPLS
from benchmarks.stats import ratio

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


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


def rows(cases: list[dict[str, Any]], unavailable: dict[str, str]) -> list[list[str]]:
    """The table's cells: one row per case and implementation, the case named once."""
    out: list[list[str]] = []
    for case in cases:
        summaries = case["summary"]
        base = summaries.get(BASELINE) or summaries.get(case["impls"][0])
        for n, key in enumerate(case["impls"]):
            s = summaries[key]
            label = IMPLS[key].label
            name = f"{case['scenario']}: {case['variant']}" if n == 0 else ""
            if not s.get("ok"):
                if key in unavailable:
                    text = "not available"
                elif s.get("unavailable"):
                    text = f"not available ({s['reason']})"
                else:
                    text = f"failed ({s.get('reason')})"
                out.append([name, label, text, "", "", ""])
                continue
            figure, spread = _cell(case["scenario"], s)
            rss = f"{s['rss_peak_mb']:.0f} MB" if s.get("rss_peak_mb") else ""
            vs = "1.00×" if key == BASELINE else _ratio(case["scenario"], s, base)
            out.append([name, label, figure, spread, vs, rss])
    return out


COLUMNS = ("case", "implementation", "result", "spread", "vs aio-pika", "peak RSS")


def table(cases: list[dict[str, Any]], unavailable: dict[str, str]) -> Table:
    """The rich table."""
    t = Table(title="rabbitflow benchmarks (medians; ratio to raw aio-pika in the same case)")
    for name in COLUMNS:
        t.add_column(name, justify="left" if name in COLUMNS[:2] else "right")
    for row in rows(cases, unavailable):
        if row[0] and t.row_count:
            t.add_section()
        t.add_row(*row)
    return t


def markdown(cases: list[dict[str, Any]], unavailable: dict[str, str]) -> str:
    """The same table in Markdown, for the README."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(cases, unavailable)]
    return "\n".join(lines)


def show(cases: list[dict[str, Any]], unavailable: dict[str, str], console: Console) -> None:
    """Print the table and the unavailable implementations."""
    console.print(table(cases, unavailable))
    for key, reason in unavailable.items():
        console.print(f"{key}: not available ({reason})")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write the results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


if __name__ == "__main__":
    # python -m benchmarks.report [results.json]: the table of a results file in Markdown
    import sys

    results = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else RESULTS).read_text())
    print(markdown(results["cases"], results.get("unavailable", {})))
