"""Repair a delay-ladder queue that came back from a broker crash without a leader
(docs/delayed-delivery.md, "After a kill -9 of the broker").

RabbitMQ 3.10 (Ra 2.2) keeps the map from a quorum queue's member name to its data
directory in a DETS file (``names.dets``) that it writes lazily. A node killed (-9) a
moment after a quorum queue was created can come back without that queue's entry. The
queue's recovery then gets ``name_not_registered`` and starts a brand-new member with an
empty log, which a single-member queue never elects leader (RabbitMQ starts it as a
follower, with no election timer; rabbitmq-server issue #15725 is the same state). The
queue record is there and passive declares answer "0 messages", but nothing can be put
into it or taken out, and the levels above it, whose at-least-once dead-lettering waits
for its confirms, stop passing messages on: they stay in those levels for good.

`broken_ladder_queues` finds such a level: a ``basic.get`` on it is not answered within
``probe_timeout``, and still not on further tries, while a passive declare says it holds
nothing. `rabbitflow.amqp.declare.declare` then deletes it (RabbitMQ force-deletes a
member without a leader after 5 s) and declares it again, with its bindings. Nothing
the broker still holds is lost: the new member never held a message, and whatever the
old one held before the crash is already out of the broker's reach (its directory is
orphaned).

A healthy level answers the ``basic.get`` at once: with "empty", or with its head
message, which goes straight back (``basic.nack`` with requeue; the broker keeps it until
then, and its TTL counts from its first enqueue). The probes run on a connection of
their own: a channel left waiting on a member without a leader can take its connection
down when the broker gives up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

PROBE_TIMEOUT = 5.0
"""Seconds a ``basic.get`` on a ladder queue may take before the queue counts as not
answering (recovering quorum queues elect their leaders within a second or two)."""
PROBE_ATTEMPTS = 3
"""A level is repaired only when it did not answer this many probes in a row."""


async def broken_ladder_queues(
    connection: AbstractConnection,
    names: Sequence[str],
    *,
    probe_timeout: float = PROBE_TIMEOUT,
    attempts: int = PROBE_ATTEMPTS,
) -> list[str]:
    """The ladder queues among ``names`` that hold nothing and answer no ``basic.get``.

    Probes run concurrently, on a connection of their own to ``connection``'s URL; a
    queue that answers once is healthy. Empty when ``connection`` is not to RabbitMQ
    (the in-memory broker has no Ra to lose a queue's member).
    """
    url = getattr(connection, "url", None)
    if getattr(url, "scheme", None) not in ("amqp", "amqps") or not names:
        return []
    suspects = list(names)
    for _ in range(attempts):
        # A connection per round: one the broker closed over a stuck probe tells nothing.
        async with _probe_connection(url) as probe:
            answers = await asyncio.gather(
                *(_answers(probe, name, probe_timeout) for name in suspects)
            )
        suspects = [n for n, ok in zip(suspects, answers, strict=True) if not ok]
        if not suspects:
            return []
    async with _probe_connection(url) as probe:
        return [name for name in suspects if await _holds_nothing(probe, name)]


@contextlib.asynccontextmanager
async def _probe_connection(url: Any) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


async def delete_queue(connection: AbstractConnection, name: str, timeout: float = 60.0) -> None:
    """Delete ``name`` (a member without a leader takes the broker about 5 s)."""
    channel = await connection.channel()
    try:
        await channel.queue_delete(name, timeout=timeout)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _answers(connection: AbstractConnection, name: str, timeout: float) -> bool:
    """Whether ``basic.get`` on ``name`` is answered within ``timeout`` (a message got is
    given back at once)."""
    try:
        channel = await connection.channel()
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
        return True  # the probe cannot tell; never repair on a guess
    try:
        queue = await channel.get_queue(name, ensure=False)
        message = await queue.get(no_ack=False, fail=False, timeout=timeout)
    except TimeoutError:
        return False
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
        return True  # missing, refused, closed: not a member without a leader
    if message is not None:
        await message.nack(requeue=True)
    with contextlib.suppress(Exception):
        await channel.close()
    return True


async def _holds_nothing(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
        return False
    count = int(queue.declaration_result.message_count or 0)
    with contextlib.suppress(Exception):
        await channel.close()
    return count == 0


__all__ = ["PROBE_ATTEMPTS", "PROBE_TIMEOUT", "broken_ladder_queues", "delete_queue"]
