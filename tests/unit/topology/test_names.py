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


SAMPLES = [
    "orders",
    "a-b_c.d:e@f#g,h/i+j k",
    "заказы",
    "party 🎉",
    "tab\tname",
    "bell\a",
    "semi;colon",
    "quote'd",
    "x" * 127,
    "x" * 128,
    "x" * 255,
    "x" * 256,
]


@pytest.mark.parametrize("name", SAMPLES, ids=range(len(SAMPLES)))
def test_name_problem_agrees_with_the_amqp_codec(name: str) -> None:
    """The check accepts exactly what pamqp encodes, for queues and for exchanges."""
    from pamqp import commands

    def codec_accepts(build: object) -> bool:
        try:
            build()  # type: ignore[operator]  # a frame constructor
        except ValueError:
            return False
        return True

    queue_ok = codec_accepts(lambda: commands.Queue.Declare(queue=name)) and (
        len(name.encode()) <= 255  # the short string itself
    )
    exchange_ok = codec_accepts(lambda: commands.Exchange.Declare(exchange=name))
    assert (name_problem(name, "queue") is None) == queue_ok
    assert (name_problem(name, "exchange") is None) == exchange_ok
