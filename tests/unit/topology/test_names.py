"""`name_problem`: what the broker and the AMQP client both accept (docs/topology.md)."""

from __future__ import annotations

import pytest

from rabbitflow.topology.names import name_problem


@pytest.mark.parametrize(
    "name", ["orders", "a-b_c.d:e@f#g,h/i+j k", "q" * 255, "", "Order.Placed.V2"]
)
def test_sendable_queue_names(name: str) -> None:
    assert name_problem(name, "queue") is None


@pytest.mark.parametrize(
    ("name", "kind", "fragment"),
    [
        ("заказы", "queue", "character 'з'"),
        ("party 🎉", "queue", "character '🎉'"),
        ("bell\a", "exchange", "character '\\x07'"),
        ("q" * 256, "queue", "256 bytes"),
        ("e" * 128, "exchange", "128 characters"),
        ("k" * 256, "routing key", "256 bytes"),
    ],
)
def test_unsendable_names_say_why(name: str, kind: str, fragment: str) -> None:
    problem = name_problem(name, kind)  # type: ignore[arg-type]  # kinds are literals
    assert problem is not None and fragment in problem


def test_a_routing_key_may_be_any_utf8_up_to_255_bytes() -> None:
    assert name_problem("заказ.создан", "routing key") is None
    assert name_problem("e" * 127, "exchange") is None
