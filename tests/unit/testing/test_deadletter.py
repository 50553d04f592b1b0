"""x-death bookkeeping of the in-memory broker, as RabbitMQ 3.10 writes it."""

from __future__ import annotations

from rabbitflow.testing.memory.deadletter import death_headers, is_cycle


def _dead(headers: dict[str, object] | None, queue: str, reason: str) -> dict[str, object]:
    return death_headers(
        headers,
        queue=queue,
        reason=reason,
        exchange="ex",
        routing_keys=["k"],
        now=0,
        original_expiration=None,
    )


def test_first_dead_lettering_writes_x_death_and_first_death_headers() -> None:
    headers = _dead({"app": "1"}, "q", "rejected")
    assert headers["app"] == "1"
    assert headers["x-death"] == [
        {
            "count": 1,
            "reason": "rejected",
            "queue": "q",
            "time": headers["x-death"][0]["time"],  # type: ignore[index]
            "exchange": "ex",
            "routing-keys": ["k"],
        }
    ]
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == ("q", "rejected")


def test_same_queue_and_reason_raise_the_count_and_move_to_the_front() -> None:
    headers = _dead(None, "a", "expired")
    headers = _dead(headers, "b", "rejected")
    headers = _dead(headers, "a", "expired")
    deaths = headers["x-death"]
    assert [(d["queue"], d["count"]) for d in deaths] == [("a", 2), ("b", 1)]  # type: ignore[attr-defined,index]
    assert headers["x-first-death-queue"] == "a"


def test_expiry_only_cycles_are_dropped_but_rejections_break_the_cycle() -> None:
    expired = _dead(None, "a", "expired")
    assert is_cycle(expired, "a")
    assert not is_cycle(expired, "b")
    assert not is_cycle(_dead(expired, "b", "rejected"), "a")
