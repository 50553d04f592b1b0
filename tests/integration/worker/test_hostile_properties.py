"""Property: whatever headers and properties a producer sends, a retrying worker settles
every message within a bound and its queue never stalls (DESIGN.md §13).

Hypothesis draws batches of messages with random headers (every type AMQP tables carry,
nested, large, huge numbers, rabbitflow's own header names with wrong values, x-death in
any shape) and properties; each batch ends with a plain message. The handler fails every
time, so each message goes through a retry and ends in the dead-letter queue (a copy by
rabbitflow, or the broker's dead-lettering after a nack): all of them must get there,
and the queue must be empty, within the bound. Bounded: 25 examples, one vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import string
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitflow import App, Message
from rabbitflow.topology import load_text
from tests.helpers import drain, message_count, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOPOLOGY = """
version: 1
queues:
  work:
    retry: {max_retries: 1, delay: 5ms}
"""
_SEQ = itertools.count()
"""Unique across examples: a failing example's leftovers never pass for the next's."""
SETTLE_WITHIN = 15.0
"""Seconds a batch may take to be settled, every message in the dead-letter queue."""

OURS = [
    "x-rabbitflow-attempt",
    "x-rabbitflow-queue",
    "x-rabbitflow-error",
    "x-rabbitflow-traceback",
    "x-rabbitflow-failed-at",
    "x-rabbitflow-original-exchange",
    "x-rabbitflow-original-routing-key",
    "x-rabbitflow-replayed-at",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
]

huge_ints = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, 2, 10**6, 10**6 + 1, 2**31, 2**63 - 1, -(2**63)]),
)
digit_strings = st.one_of(
    st.text(string.digits, min_size=1, max_size=40),
    st.sampled_from(["1000000000000000000000000000000", "-5", "3.0", " 7 ", "1e9", "٣", "２"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    huge_ints,
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False),
    st.text(max_size=300),
    st.integers(1000, 20_000).map(lambda n: "9" * n),  # long, and a number
    digit_strings,
    st.binary(max_size=200).map(bytearray),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=UTC)
    ),
)
keys = st.one_of(st.sampled_from(OURS), st.text(min_size=1, max_size=60))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)
queue_names = st.one_of(
    st.sampled_from(["work.retry.5ms", "work", "work.retry.", "other.retry.1s", "work.dlq"]),
    st.text(max_size=50),
    huge_ints,
)
death_entry = st.dictionaries(
    st.sampled_from(["queue", "reason", "count", "exchange", "routing-keys", "time"]),
    st.one_of(queue_names, values),
    max_size=6,
)
x_death = st.one_of(
    st.lists(death_entry, max_size=3), values, st.lists(st.one_of(values, death_entry), max_size=3)
)
attempts = st.one_of(digit_strings, huge_ints, values)
ours = st.dictionaries(
    st.sampled_from(OURS), st.one_of(digit_strings, huge_ints, values), max_size=4
)
headers = st.tuples(
    st.dictionaries(keys, values, max_size=6),
    ours,
    st.one_of(st.none(), attempts),
    st.one_of(st.none(), x_death),
).map(
    lambda t: {
        **t[0],
        **t[1],
        **({} if t[2] is None else {"x-rabbitflow-attempt": t[2]}),
        **({} if t[3] is None else {"x-death": t[3]}),
    }
)
short_text = st.text(max_size=80).filter(lambda t: len(t.encode()) <= 255)
messages = st.fixed_dictionaries(
    {
        "headers": headers,
        "body": st.one_of(
            st.binary(max_size=300),
            st.sampled_from([b"null", b"[1]", b"{}", b'{"a": 1,', b"[" * 5000 + b"]" * 5000]),
        ),
        "content_type": st.one_of(
            st.none(), st.sampled_from(["application/json", "text/plain"]), short_text
        ),
        "content_encoding": st.one_of(st.none(), short_text),
        "message_id": st.one_of(st.none(), short_text),
        "correlation_id": st.one_of(st.none(), short_text),
        "reply_to": st.one_of(st.none(), short_text),
        "priority": st.one_of(st.none(), st.integers(0, 255)),
        "type": st.one_of(st.none(), short_text),
        "app_id": st.one_of(st.none(), short_text),
        "timestamp": st.one_of(
            st.none(),
            st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)).map(
                lambda d: d.replace(microsecond=0, tzinfo=UTC)
            ),
        ),
        "delivery_mode": st.sampled_from([1, 2]),
    }
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(batch=st.lists(messages, min_size=1, max_size=3))
async def test_every_hostile_message_is_settled_and_the_queue_never_stalls(
    amqp_url: str, channel: Any, batch: list[dict[str, Any]]
) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    seen: list[int] = []

    @app.handler("work", prefetch=4)
    async def always_fails(body: bytes, message: Message) -> None:
        seen.append(message.attempt)
        raise RuntimeError("fails every time")

    async with app:
        # What a failing example left must not count against the next (shrinking).
        for queue in ("work.dlq", "work.retry.5ms"):
            await (await channel.get_queue(queue, ensure=False)).purge()
        confirmed, published = await _publish(amqp_url, batch)
        await wait_for(
            lambda: _all_dead(channel, confirmed),
            timeout=SETTLE_WITHIN,
            message=f"dead letters of {sorted(confirmed)}",
        )
        assert await message_count(channel, "work") == 0
    await asyncio.sleep(0)
    assert await message_count(channel, "work") == 0  # nothing was left unacked either
    # Seqs of an earlier, failing example may still arrive (shrinking): only ours count.
    dead = [
        s for m in await drain(channel, "work.dlq") if (s := m.headers["test-seq"]) in published
    ]
    assert sorted(dead) == sorted(set(dead)), "a message was dead-lettered twice"
    assert confirmed <= set(dead)
    assert seen, "the handler ran"


async def _publish(amqp_url: str, batch: list[dict[str, Any]]) -> tuple[set[int], set[int]]:
    """Publish the batch and a plain message, each tagged with a ``test-seq`` header.

    Returns the seqs the broker confirmed, and every seq sent. The broker itself may
    refuse what a producer sends (RabbitMQ 3.10 closes the connection with INTERNAL_ERROR
    on some forged ``x-death`` values): such a message never reached the worker.
    """
    confirmed: set[int] = set()
    published: set[int] = set()
    connection = None
    try:
        for fields in [*batch, {"body": b"plain", "headers": {}}]:
            seq = next(_SEQ)
            fields = dict(fields)
            body = fields.pop("body")
            fields["headers"] = {**fields["headers"], "test-seq": seq}
            published.add(seq)
            try:
                if connection is None or connection.is_closed:
                    connection = await aio_pika.connect(amqp_url)
                channel = await connection.channel(publisher_confirms=True)
                await channel.default_exchange.publish(
                    aio_pika.Message(body, **fields), routing_key="work"
                )
                confirmed.add(seq)
                await channel.close()
            except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
                with contextlib.suppress(Exception):
                    await connection.close()  # type: ignore[union-attr]
                connection = None
    finally:
        if connection is not None and not connection.is_closed:
            await connection.close()
    assert max(published) in confirmed, "the plain message was confirmed"
    return confirmed, published


async def _all_dead(channel: Any, seqs: set[int]) -> bool:
    if await message_count(channel, "work.dlq") < len(seqs):
        return False
    queue = await channel.get_queue("work.dlq", ensure=False)
    found: set[int] = set()
    # Peek without taking: get, note, reject with requeue (the order does not matter).
    tags = []
    while (m := await queue.get(fail=False, no_ack=False)) is not None:
        found.add(m.headers.get("test-seq"))
        tags.append(m)
    for m in tags:
        await m.nack(requeue=True)
    return seqs <= found
