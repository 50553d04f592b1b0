"""Reading RabbitMQ's PRECONDITION_FAILED replies into DeclareConflict."""

from __future__ import annotations

import pytest

from rabbitflow.amqp.declare import parse_inequivalent


@pytest.mark.parametrize(
    ("reply", "declared", "expected"),
    [
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'pay' in vhost "
            "'v': received the value 'quorum' of type 'longstr' but current is none",
            {"x-queue-type": "quorum"},
            ("v", "queue", "pay", "x-queue-type", None, "quorum"),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'ttl' in vhost "
            "'/': received '2000' but current is '1000'",
            {"x-message-ttl": 2000},
            ("/", "queue", "ttl", "x-message-ttl", 1000, 2000),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'ttl' in vhost "
            "'/': received the value '2000' of type 'signedint' but current is the value "
            "'1000' of type 'long'",
            {},
            ("/", "queue", "ttl", "x-message-ttl", 1000, 2000),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'orders' in vhost "
            "'shop': received 'fanout' but current is 'topic'",
            {"type": "fanout"},
            ("shop", "exchange", "orders", "type", "topic", "fanout"),
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost 'v': "
            "received 'true' but current is 'false'",
            {"durable": True},
            ("v", "queue", "q", "durable", False, True),
        ),
    ],
)
def test_inequivalent_arg_is_read(
    reply: str, declared: dict[str, object], expected: tuple[object, ...]
) -> None:
    conflict = parse_inequivalent(reply, declared)
    assert conflict is not None
    got = (
        conflict.vhost,
        conflict.kind,
        conflict.name,
        conflict.argument,
        conflict.existing,
        conflict.declared,
    )
    assert got == expected


def test_conflict_line_names_vhost_object_argument_and_both_values() -> None:
    conflict = parse_inequivalent(
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'pay' in vhost "
        "'shop': received the value 'quorum' of type 'longstr' but current is none",
        {"x-queue-type": "quorum"},
    )
    assert str(conflict) == (
        "vhost 'shop': queue 'pay' exists with x-queue-type=(not set), the files declare "
        "x-queue-type='quorum'; delete it or align the files"
    )


def test_other_replies_are_not_conflicts() -> None:
    assert parse_inequivalent("PRECONDITION_FAILED - queue 'q' in use", {}) is None
