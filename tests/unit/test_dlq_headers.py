"""Reading and rewriting dead-letter headers (DESIGN.md §2), no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rabbitflow.dlq_headers import (
    dead_letter_target,
    describe,
    matches,
    parse_where,
    replay_headers,
)

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
OURS = {
    "x-rabbitflow-attempt": 5,
    "x-rabbitflow-queue": "jobs",
    "x-rabbitflow-error": "TimeoutError: slow",
    "x-rabbitflow-failed-at": "2026-11-29T08:00Z",
    "x-rabbitflow-original-exchange": "events",
    "x-rabbitflow-original-routing-key": "job.new",
    "tenant": b"acme",
}
DEATH = {
    "x-death": [
        {
            "queue": "jobs",
            "reason": "rejected",
            "count": 1,
            "exchange": "events",
            "routing-keys": ["job.new"],
            "time": NOW,
        }
    ],
    "x-first-death-queue": "jobs",
    "x-first-death-reason": "rejected",
    "x-first-death-exchange": "events",
    "x-delivery-count": 2,
}


def test_replay_drops_the_attempt_and_death_records_and_stamps_the_time() -> None:
    out = replay_headers({**OURS, **DEATH}, NOW)
    assert "x-rabbitflow-attempt" not in out
    assert not [k for k in out if k.startswith(("x-death", "x-first-death", "x-delivery"))]
    assert out["x-rabbitflow-replayed-at"] == "2026-11-29T09:00:00+00:00"
    assert out["tenant"] == b"acme"
    assert out["x-rabbitflow-error"] == "TimeoutError: slow"


def test_replay_of_a_broker_dead_letter_keeps_where_it_was_published() -> None:
    out = replay_headers(DEATH, NOW)
    assert out["x-rabbitflow-original-exchange"] == "events"
    assert out["x-rabbitflow-original-routing-key"] == "job.new"


def test_the_target_is_the_rabbitflow_queue_header_else_the_first_death() -> None:
    assert dead_letter_target({**DEATH, "x-rabbitflow-queue": b"other"}) == "other"
    assert dead_letter_target(DEATH) == "jobs"
    assert dead_letter_target({"x-first-death-queue": "q"}) == "q"
    assert dead_letter_target({}) is None


def test_where_matches_every_condition_with_wildcards() -> None:
    assert matches(OURS, parse_where(["tenant=acme", "x-rabbitflow-error=Timeout*"]))
    assert not matches(OURS, parse_where(["tenant=other"]))
    assert not matches(OURS, parse_where(["missing=*"]))
    assert matches(OURS, [])
    with pytest.raises(ValueError, match="expected HEADER=VALUE"):
        parse_where(["no-equals"])


def test_describe_summarises_ours_and_the_brokers() -> None:
    row = describe({"headers": OURS, "message_id": "m1"}, b'{"a": 1}', 1)
    assert (row["error"], row["attempt"], row["queue"]) == ("TimeoutError: slow", 5, "jobs")
    assert (row["exchange"], row["routing_key"]) == ("events", "job.new")
    assert (row["body"], row["body_encoding"], row["size"]) == ('{"a": 1}', "utf-8", 8)
    assert row["headers"]["tenant"] == "acme"
    broker = describe({"headers": DEATH}, b"\xff\x00", 2)
    assert broker["error"] == "dead-lettered by the broker: rejected"
    assert (broker["attempt"], broker["failed_at"]) == (1, NOW.isoformat())
    assert (broker["body"], broker["body_encoding"]) == ("/wA=", "base64")
