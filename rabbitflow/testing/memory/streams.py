"""Stream queues in the in-memory broker (``x-queue-type: stream``): an append-only log
read by consumers that each keep a cursor, ``x-stream-offset`` specs, and retention by
``x-max-age`` / ``x-max-length-bytes`` on the virtual clock.

Where it differs from RabbitMQ (docs/testing.md): RabbitMQ stores events in chunks and
drops whole segments, so ``last`` starts at the last *chunk*, a timestamp resolves to a
chunk (one-second resolution), and retention removes nothing until a segment is full;
here a chunk is one event, a timestamp is exact, and retention drops single events.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pamqp.commands import Basic

from rabbitflow.testing.memory.model import BrokerError, Consumer, Queue, Stored, copy_properties

STREAM_OFFSET = "x-stream-offset"
_AGE_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def max_age_seconds(value: Any) -> float | None:
    """``x-max-age`` (``7D``, ``12h``, ``30m``, ``45s``, also ``Y`` and ``M``) in seconds."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    m = re.fullmatch(r"(\d+)([YMDhms])", text)
    if m is None:
        raise BrokerError(406, f"PRECONDITION_FAILED - invalid arg 'x-max-age': {text!r}")
    return int(m.group(1)) * _AGE_UNITS[m.group(2)]


def start_cursor(queue: Queue, spec: Any) -> int:
    """The first offset a new consumer reads, from its ``x-stream-offset`` argument."""
    if spec is None or spec == "next":
        return queue.next_offset
    if spec == "first":
        return queue.first_offset
    if spec == "last":
        return queue.log[-1].offset or 0 if queue.log else queue.next_offset
    if isinstance(spec, bool):
        raise BrokerError(406, f"PRECONDITION_FAILED - invalid arg '{STREAM_OFFSET}'")
    if isinstance(spec, int):
        return max(spec, queue.first_offset)
    if isinstance(spec, datetime):
        moment = spec.timestamp()
        for message in queue.log:
            if message.written_at >= moment:
                return message.offset or 0
        return queue.next_offset
    raise BrokerError(406, f"PRECONDITION_FAILED - invalid arg '{STREAM_OFFSET}': {spec!r}")


def append(queue: Queue, message: Stored, now: float) -> None:
    """Append an event (it gets the next offset), then apply retention."""
    message.offset = queue.next_offset
    message.written_at = now
    queue.next_offset += 1
    queue.log.append(message)
    retain(queue, now)


def retain(queue: Queue, now: float) -> None:
    """Drop the oldest events past ``x-max-age`` or over ``x-max-length-bytes``."""
    age = max_age_seconds(queue.arg("x-max-age"))
    limit = queue.arg("x-max-length-bytes")
    size = sum(m.size for m in queue.log) if limit is not None else 0
    while queue.log:
        head = queue.log[0]
        too_old = age is not None and head.written_at + age < now
        too_big = limit is not None and size > int(limit)
        if not (too_old or too_big):
            break
        queue.log.pop(0)
        size -= head.size
        queue.first_offset = (head.offset or 0) + 1


def deliverable(queue: Queue) -> list[tuple[Consumer, Stored]]:
    """The events each consumer with room reads next, in offset order per consumer."""
    out = []
    for consumer in queue.consumers:
        if consumer.cursor is None:
            continue
        consumer.cursor = max(consumer.cursor, queue.first_offset)
        budget = _room(consumer)
        while budget and consumer.cursor < queue.next_offset:
            out.append((consumer, queue.log[consumer.cursor - queue.first_offset]))
            consumer.cursor += 1
            budget -= 1
    return out


def waiting(queue: Queue) -> bool:
    """Whether a consumer with room has an event to read."""
    return any(
        c.cursor is not None and c.cursor < queue.next_offset and _room(c) for c in queue.consumers
    )


def delivered_properties(message: Stored) -> Basic.Properties:
    """What a stream consumer sees: the event's headers and its ``x-stream-offset``."""
    headers = {**(message.properties.headers or {}), STREAM_OFFSET: message.offset}
    return copy_properties(message.properties, headers=headers)


def _room(consumer: Consumer) -> int:
    return max(consumer.prefetch - consumer.unacked, 0)


__all__ = [
    "append",
    "deliverable",
    "delivered_properties",
    "max_age_seconds",
    "retain",
    "start_cursor",
    "waiting",
]
