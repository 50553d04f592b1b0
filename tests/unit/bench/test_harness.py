"""The benchmark harness's pure parts: case building, interleaving, summaries."""

from __future__ import annotations

import json

import pytest

from benchmarks.scenarios import FULL, QUICK, SCENARIOS, build_cases, order
from benchmarks.stats import flatness, ratio, summarise
from benchmarks.workers.common import Order, make_body, percentile


def test_bodies_are_about_200_bytes_and_validate() -> None:
    body = make_body(123456, ts=1_700_000_000_000_000_000)
    assert 180 <= len(body) <= 260
    assert Order.model_validate_json(body).ts == 1_700_000_000_000_000_000
    assert json.loads(body)["order_id"] == "ord-0000123456"


def test_order_alternates_between_repetitions() -> None:
    assert order(("a", "b", "c"), 0) == ("a", "b", "c")
    assert order(("a", "b", "c"), 1) == ("c", "b", "a")
    assert order(("a", "b", "c"), 2) == ("a", "b", "c")


def test_full_preset_has_every_scenario_with_three_repetitions_and_a_1m_backlog() -> None:
    cases = build_cases(FULL, SCENARIOS)
    assert {c.scenario for c in cases} == set(SCENARIOS)
    assert [c.prefetch for c in cases if c.scenario == "consume"] == [1, 10, 100, 1000]
    assert all(c.repetitions >= 3 for c in cases if c.scenario != "memory")
    (memory,) = [c for c in cases if c.scenario == "memory"]
    assert memory.count == 1_000_000
    assert memory.prefetch == 1000
    (latency,) = [c for c in cases if c.scenario == "latency"]
    assert (latency.rate, latency.seconds, latency.count) == (2000, 10.0, 20_000)


def test_overrides_apply_to_throughput_counts_but_not_latency() -> None:
    cases = build_cases(QUICK, ("consume", "latency"), repetitions=5, count=77)
    assert all(c.repetitions == 5 for c in cases)
    assert {c.count for c in cases if c.scenario == "consume"} == {77}
    assert [c.count for c in cases if c.scenario == "latency"] == [2000]


def test_summary_is_the_median_with_its_spread() -> None:
    runs = [{"rate": 100.0}, {"rate": 300.0}, {"rate": 200.0}]
    s = summarise("consume", runs)
    assert (s["rate"], s["rate_min"], s["rate_max"], s["runs"]) == (200.0, 100.0, 300.0, 3)


def test_summary_keeps_the_reason_when_nothing_ran() -> None:
    assert summarise("consume", [{"unavailable": "no App"}]) == {
        "ok": False,
        "unavailable": True,
        "reason": "no App",
    }
    failed = summarise("consume", [{"error": "timed out"}])
    assert failed["reason"] == "timed out"
    assert not failed["unavailable"]


def test_latency_summary_takes_the_median_of_each_percentile() -> None:
    runs = [
        {"rate": 1.0, "p50": 1.0, "p95": 5.0, "p99": 9.0},
        {"rate": 1.0, "p50": 3.0, "p95": 7.0, "p99": 20.0},
        {"rate": 1.0, "p50": 2.0, "p95": 6.0, "p99": 10.0},
    ]
    s = summarise("latency", runs)
    assert (s["p50"], s["p95"], s["p99"]) == (2.0, 6.0, 10.0)


def test_flatness_ignores_the_first_tenth_of_the_drain() -> None:
    mb = 2**20
    samples = [(0.0, 10 * mb), (0.5, 30 * mb), (1.0, 40 * mb), (5.0, 42 * mb), (10.0, 40 * mb)]
    f = flatness(samples)
    assert f["rss_early_mb"] == 40
    assert f["rss_end_mb"] == 40
    assert f["rss_spread_pct"] == pytest.approx(5.0)


def test_percentile_and_ratio() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 51.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) == 0.0
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None


def test_only_rabbitflows_queue_gets_the_retry_policy() -> None:
    pytest.importorskip("psutil")  # the harness needs the bench extra
    from benchmarks.run import topology_text
    from benchmarks.scenarios import Case

    case = Case("retry", "x", ("aiopika+pydantic", "rabbitflow"))
    text = topology_text(case, ["bench.aiopika.pydantic", "bench.rabbitflow"])
    assert "  bench.aiopika.pydantic: {}\n" in text
    assert "  bench.rabbitflow:\n    retry: {max_retries: 3, backoff: fixed, delay: 1ms}" in text


def test_import_scale_quick_run_reports_every_case() -> None:
    from benchmarks.import_scale import CASES, run, table

    rows = run(list(CASES), scale=100)
    assert [r["case"] for r in rows] == list(CASES)
    assert rows[2]["queues"] == 2 * 100 and rows[2]["bindings"] == 100 * 11
    assert table(rows).count("\n") == len(CASES) + 1
