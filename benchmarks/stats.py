"""Pure summaries of repeated runs: medians, spreads, ratios, RSS flatness."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summarise(scenario: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median figures over the successful runs of one implementation in one case."""
    ok = [r for r in runs if "error" not in r and "unavailable" not in r]
    if not ok:
        unavailable = next((r["unavailable"] for r in runs if "unavailable" in r), None)
        error = next((r["error"] for r in runs if "error" in r), None)
        return {
            "ok": False,
            "unavailable": unavailable is not None,
            "reason": unavailable or error or "no runs",
        }
    out: dict[str, Any] = {"ok": True, "runs": len(ok)}
    rates = [r["rate"] for r in ok if "rate" in r]
    if rates:
        out.update(rate=statistics.median(rates), rate_min=min(rates), rate_max=max(rates))
    if scenario == "latency":
        for p in ("p50", "p95", "p99"):
            out[p] = statistics.median(r[p] for r in ok)
    rss = [r["rss_peak"] for r in ok if r.get("rss_peak")]
    if rss:
        out["rss_peak_mb"] = statistics.median(rss) / 2**20
    if scenario == "memory":
        out.update(flatness(ok[0].get("rss_samples", [])))
    return out


def flatness(samples: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """How much RSS moved while draining, ignoring the first 10 % (start-up, first prefetch).

    Args:
        samples: ``(seconds since the consumer started, rss bytes)``, in time order.

    Returns:
        ``rss_early_mb`` (at 10 %), ``rss_end_mb``, ``rss_min_mb``, ``rss_max_mb`` and
        ``rss_spread_pct``: (max - min) / min over the window, in percent.
    """
    if len(samples) < 2:
        return {}
    end = samples[-1][0]
    window = [rss for t, rss in samples if t >= 0.1 * end] or [samples[-1][1]]
    low, high = min(window), max(window)
    return {
        "rss_early_mb": window[0] / 2**20,
        "rss_end_mb": window[-1] / 2**20,
        "rss_min_mb": low / 2**20,
        "rss_max_mb": high / 2**20,
        "rss_spread_pct": 100 * (high - low) / low if low else 0.0,
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline`` when both are known and the baseline is not zero."""
    if value is None or not baseline:
        return None
    return value / baseline
