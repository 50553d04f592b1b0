"""Producer-controlled headers are read defensively (DESIGN.md §13)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rabbitflow import headers as h
from rabbitflow.worker.message import Message


@pytest.mark.parametrize(
    ("value", "attempt"),
    [
        (None, 1),
        (3, 3),
        ("3", 3),
        (b"4", 4),
        (" 5 ", 5),
        (1_000_000, 1_000_000),
        (1_000_001, 1),
        ("1000000000000000000000000000000", 1),
        (10**30, 1),
        (0, 1),
        (-2, 1),
        ("-2", 1),
        (True, 1),
        (2.0, 1),
        (Decimal("2"), 1),
        ("２", 1),  # a full-width digit: isdigit() says yes, int() would accept it
        ("", 1),
        ({"a": 1}, 1),
        ([2], 1),
    ],
)
def test_an_attempt_outside_1_to_a_million_counts_as_1(value: Any, attempt: int) -> None:
    assert h.read_attempt({h.ATTEMPT: value} if value is not None else {}) == attempt


def _message(headers: dict[str, Any], exchange: str, routing_key: str) -> Message:
    return Message(
        body=b"{}", headers=headers, exchange=exchange, routing_key=routing_key, queue="work"
    )


FORGED = {h.ORIGINAL_EXCHANGE: "orders", h.ORIGINAL_ROUTING_KEY: "order.cancelled"}
RETRY_DEATH = [{"queue": "work.retry.100ms", "reason": "expired", "count": 1}]


def test_forged_original_headers_on_a_first_delivery_are_ignored() -> None:
    message = _message(dict(FORGED), "orders", "order.placed")
    assert (message.exchange, message.routing_key) == ("orders", "order.placed")
    # Forging x-death too does not help through a real exchange...
    message = _message({**FORGED, "x-death": RETRY_DEATH}, "orders", "order.placed")
    assert message.routing_key == "order.placed"
    # ...nor an x-death naming another queue's delay queue, through the default exchange.
    other = [{"queue": "payments.retry.1s"}]
    assert _message({**FORGED, "x-death": other}, "", "work").routing_key == "work"


def test_original_headers_are_believed_on_a_return_from_the_queues_delay_queue() -> None:
    message = _message({**FORGED, "x-death": RETRY_DEATH}, "", "work")
    assert (message.exchange, message.routing_key) == ("orders", "order.cancelled")
    replayed = _message({**FORGED, h.REPLAYED_AT: "2026-12-01T10:00:00"}, "", "work")
    assert replayed.routing_key == "order.cancelled"


@pytest.mark.parametrize(
    "deaths",
    [None, "x", b"x", [], [1], [{"queue": 7}], [{"queue": {"a": 1}}], [{}], {"queue": "q"}],
)
def test_malformed_x_death_never_raises(deaths: Any) -> None:
    message = _message({**FORGED, "x-death": deaths}, "", "work")
    assert message.routing_key == "work"


def test_non_text_original_headers_fall_back_to_the_delivery() -> None:
    headers = {
        h.ORIGINAL_EXCHANGE: 12,
        h.ORIGINAL_ROUTING_KEY: "k" * 300,
        "x-death": RETRY_DEATH,
    }
    message = _message(headers, "", "work")
    assert (message.exchange, message.routing_key) == ("", "work")
