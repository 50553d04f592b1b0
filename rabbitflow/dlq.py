"""Dead letters: find a work queue's DLQ, list, replay and purge it without losing any.

Reading consumes with manual ack and acks nothing it only looks at. At the end, one
``basic.nack(multiple, requeue)`` gives every message still held back to the queue, in
the order it was taken: count and order stay as they were. A process killed midway loses
nothing either, since the broker requeues what a closed channel held.

Replay publishes each message to its queue through the default exchange, with ``mandatory``
and a publisher confirm, and acks it in the DLQ only once the broker confirmed: an
interruption can duplicate a message, never lose one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from rabbitflow.dlq_headers import (
    dead_letter_target,
    describe,
    matches,
    replay_headers,
)
from rabbitflow.errors import QueueNotFound
from rabbitflow.topology.dead_letters import DeadLetterQueue, find_dead_letter_queue

IDLE_TIMEOUT = 5.0
"""Seconds without a delivery after which a reader stops early (the queue shrank)."""
REPLAY_BATCH = 200
"""Messages published before waiting for their confirms."""


@dataclass
class ReplayResult:
    """What a replay did."""

    moved: int = 0
    skipped: int = 0
    """Messages that did not match ``--where`` (or belong to another queue): left in place."""
    failed: list[str] = field(default_factory=list)
    """Messages left in the DLQ because they could not be moved, one reason each."""


Visitor = Callable[[AbstractIncomingMessage, int], None]
"""Called by `scan` with each dead letter and its position in the DLQ (1 = head)."""
Accept = Callable[[AbstractIncomingMessage], bool]
"""Tells `replay` whether to move a dead letter (besides ``where``)."""


async def list_dead_letters(
    connection: AbstractConnection, dlq: DeadLetterQueue, limit: int | None = None
) -> list[dict[str, Any]]:
    """The dead letters of ``dlq`` in queue order (at most ``limit``), leaving them there."""
    out: list[dict[str, Any]] = []

    def keep(message: AbstractIncomingMessage, position: int) -> None:
        if limit is None or len(out) < limit:
            out.append(describe_message(message, position))

    await scan(connection, dlq, keep)
    return out


async def scan(connection: AbstractConnection, dlq: DeadLetterQueue, visit: Visitor) -> int:
    """Call ``visit`` with every dead letter of ``dlq`` in queue order, leaving them there
    (count and order); return how many messages the DLQ held.

    Every message is held unacknowledged until the walk ends, then all are given back in
    one ``basic.nack``: keep ``visit`` quick.
    """
    async with _Reader(connection, dlq.name) as reader:
        while (message := await reader.next()) is not None:
            if _owns(dlq, message.headers):
                visit(message, reader.taken)
        return reader.taken


def describe_message(message: AbstractIncomingMessage, position: int) -> dict[str, Any]:
    """A dead letter as `describe` summarizes it (a line of ``dlq list --json``)."""
    return describe(_properties(message), message.body, position)


async def replay(
    connection: AbstractConnection,
    dlq: DeadLetterQueue,
    *,
    limit: int | None = None,
    where: Sequence[tuple[str, str]] = (),
    accept: Accept | None = None,
    publish_timeout: float = 10.0,
) -> ReplayResult:
    """Move matching dead letters back to their queue; each is confirmed before its ack.

    Args:
        connection: an open connection.
        dlq: the DLQ to read.
        limit: move at most this many.
        where: (header, pattern) pairs a message must all match (shell-style wildcards).
        accept: a further test a message must pass (the dashboard's selection and filter).
        publish_timeout: seconds to wait for each batch's confirms.
    """
    result = ReplayResult()
    publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        async with _Reader(connection, dlq.name) as reader:
            batch: list[tuple[AbstractIncomingMessage, str]] = []
            while (message := await reader.next()) is not None:
                if limit is not None and result.moved + len(batch) >= limit:
                    continue  # walked to the end all the same: see _Reader
                target = dead_letter_target(message.headers)
                if (
                    not _owns(dlq, message.headers)
                    or not matches(message.headers, where)
                    or (accept is not None and not accept(message))
                ):
                    result.skipped += 1
                elif target is None:
                    result.failed.append(
                        f"message {message.message_id or reader.taken}: "
                        "no x-rabbitflow-queue or x-death header names its queue"
                    )
                else:
                    batch.append((message, target))
                if len(batch) >= REPLAY_BATCH:
                    await _move(publisher, batch, result, publish_timeout)
                    batch = []
            await _move(publisher, batch, result, publish_timeout)
    finally:
        await publisher.close()
    return result


async def purge(connection: AbstractConnection, dlq: DeadLetterQueue) -> int:
    """Drop the dead letters of ``dlq``; return how many."""
    if not dlq.shared:
        channel = await connection.channel()
        try:
            queue = await passive_queue(channel, dlq.name)
            purged = await queue.purge()
            return int(purged.message_count or 0)
        finally:
            await channel.close()
    count = 0
    async with _Reader(connection, dlq.name) as reader:
        while (message := await reader.next()) is not None:
            if _owns(dlq, message.headers):
                await reader.settle(message)
                count += 1
    return count


async def queue_depth(connection: AbstractConnection, name: str) -> int:
    """The ready messages of a queue (passive declare)."""
    channel = await connection.channel()
    try:
        queue = await passive_queue(channel, name)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def passive_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """The queue ``name``, which must exist.

    Raises:
        QueueNotFound: when the broker does not have it.
    """
    try:
        return await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise QueueNotFound(
            f"queue {name!r} does not exist on the broker (check the queue "
            "name and the vhost of --url; for dead letters sent to a shared "
            "exchange, pass --topology FILE)"
        ) from None


async def _move(
    publisher: AbstractChannel,
    batch: list[tuple[AbstractIncomingMessage, str]],
    result: ReplayResult,
    confirm_within: float,
) -> None:
    if not batch:
        return
    now = datetime.now(UTC)
    sends = [
        publisher.default_exchange.publish(
            _copy(m, now), routing_key=target, mandatory=True, timeout=confirm_within
        )
        for m, target in batch
    ]
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    for (message, target), outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            # Left unacked: the final nack returns it to the DLQ at its place.
            result.failed.append(
                f"message {message.message_id or '?'} to {target!r}: {_why(outcome)}"
            )
        else:
            await message.ack()
            result.moved += 1


def _copy(message: AbstractIncomingMessage, now: datetime) -> aio_pika.Message:
    # user_id is left out: the broker refuses a user_id other than the connection's.
    return aio_pika.Message(
        body=message.body,
        headers=replay_headers(message.headers, now),
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=message.delivery_mode,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


def _owns(dlq: DeadLetterQueue, headers: Mapping[str, Any]) -> bool:
    """Whether a dead letter in a shared DLQ belongs to the work queue."""
    return not dlq.shared or dead_letter_target(headers) == dlq.work_queue


def _properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        "headers": dict(message.headers),
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "content_type": message.content_type,
        "timestamp": message.timestamp,
        "redelivered": message.redelivered,
    }


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiormq.exceptions.PublishError):
        return "unroutable (does the queue exist?)"
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return "nacked by the broker"
    if isinstance(exc, TimeoutError):
        return "no confirm in time"
    return str(exc) or type(exc).__name__


MAX_PREFETCH = 65535
"""The largest prefetch AMQP can say (a short). A quorum DLQ deeper than this cannot be
walked whole: the reader stops after `IDLE_TIMEOUT` with what it got."""


def _prefetch_for(expected: int) -> int:
    # Over the largest prefetch, 0 (unlimited) still lets a classic queue deliver all.
    return expected if expected <= MAX_PREFETCH else 0


class _Reader:
    """Consumes a queue with manual ack on its own channel, without acking; on exit every
    message still held goes back to the queue in one ``basic.nack``.

    It reads as many messages as the queue held when it started (a passive declare
    counts them), or until no message came for `IDLE_TIMEOUT` seconds (another client took
    some). Callers walk the whole queue even when they need only its head: a quorum queue
    puts requeued messages behind the ones never delivered, so giving back only the first
    N would move them to the end; giving back every message at once keeps the order on
    both queue types.
    """

    def __init__(self, connection: AbstractConnection, queue: str) -> None:
        self._connection, self._name = connection, queue
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._consumer: str | None = None
        self.expected = 0
        self.taken = 0

    async def __aenter__(self) -> _Reader:
        self._channel = await self._connection.channel()
        self._queue = await passive_queue(self._channel, self._name)
        self.expected = int(self._queue.declaration_result.message_count or 0)
        if self.expected:
            # Room for every message: those held back would otherwise stall the stream.
            # Not prefetch 0: a quorum queue turns "unlimited" into 2000 in flight, and a
            # walk of a larger DLQ would stop there after IDLE_TIMEOUT.
            await self._channel.set_qos(prefetch_count=_prefetch_for(self.expected))
            self._consumer = await self._queue.consume(self._inbox.put, no_ack=False)
        return self

    async def next(self) -> AbstractIncomingMessage | None:
        """The next message, unacknowledged; None once the queue was walked."""
        if self.taken >= self.expected:
            return None
        try:
            message = await asyncio.wait_for(self._inbox.get(), IDLE_TIMEOUT)
        except TimeoutError:
            return None
        self.taken += 1
        return message

    async def settle(self, message: AbstractIncomingMessage) -> None:
        """Remove a message for good."""
        await message.ack()

    async def __aexit__(self, *exc: object) -> None:
        assert self._channel is not None
        assert self._queue is not None
        try:
            if self._consumer is not None and not self._channel.is_closed:
                await self._queue.cancel(self._consumer)
                # Delivery tag 0 with multiple: every message still unacked goes back, in
                # one go (AMQP 0-9-1 basic.nack), so the queue keeps its order.
                underlay = await self._channel.get_underlay_channel()
                await underlay.basic_nack(0, multiple=True, requeue=True)
        finally:
            await self._channel.close()


__all__ = [
    "Accept",
    "DeadLetterQueue",
    "ReplayResult",
    "Visitor",
    "describe_message",
    "find_dead_letter_queue",
    "list_dead_letters",
    "purge",
    "queue_depth",
    "replay",
    "scan",
]
