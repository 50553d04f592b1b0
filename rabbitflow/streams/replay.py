"""Re-publishing the stored events of a stream queue (``rabbitflow replay``, DESIGN.md §9).

The stream is read with a consumer of its own (``x-stream-offset``); reading a stream
removes nothing, so the stream is left as it was. The end of the replay is the stream's
last offset when the replay starts, found by peeking with ``x-stream-offset: last``:
events appended meanwhile are not replayed (and a replay into an exchange that routes
back into the same stream cannot loop). ``IDLE`` bounds every wait for a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from rabbitflow.amqp.publish import BulkResult, Outgoing
from rabbitflow.dlq_headers import matches
from rabbitflow.errors import BrokerError, ConfigError
from rabbitflow.units import parse_duration

IDLE = 1.0
"""Seconds without a delivery after which reading stops although the last offset seen at
the start was not reached (retention dropped it, or the stream is empty)."""

PREFETCH = 500
"""Unacknowledged deliveries of the reading consumer (a stream consumer needs one)."""

PEEK_GAP = 0.2
"""Seconds without a further delivery that end a peek at the stream's last chunk."""

ACK_EVERY = 100
"""Deliveries acknowledged at once (``multiple``), well under the prefetch."""

STREAM_OFFSET = "x-stream-offset"
REPLAYED_FROM = "x-rabbitflow-replayed-from"
"""Header of a replayed copy: ``<stream>@<offset>`` it was read from."""

Position = str | int | datetime
"""An ``x-stream-offset`` argument: ``first``/``last``/``next``, an offset, a time."""

_SPECS = ("first", "last", "next")


def parse_position(text: str, now: datetime | None = None) -> Position:
    """Read ``--from``: ``first``, ``last``, ``next``, an int offset, an ISO time
    (UTC unless it names a zone) or a duration such as ``1h`` (that long before ``now``).

    Raises:
        ValueError: for anything else, or a negative offset.
    """
    value = text.strip()
    if value in _SPECS:
        return value
    if re.fullmatch(r"-?\d+", value):
        offset = int(value)
        if offset < 0:
            raise ValueError(f"invalid offset {text!r}: offsets start at 0")
        return offset
    if re.fullmatch(r"\d+\s*(ms|s|m|h|d)", value):
        moment = (now or datetime.now(UTC)) - timedelta(milliseconds=parse_duration(value))
        return moment
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"invalid position {text!r}: use first, last, next, an offset (42), "
            "an ISO time (2026-12-01T10:00:00Z) or a duration (1h, 30m, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_until(text: str) -> int | datetime:
    """Read ``--until``: an int offset (the last one replayed) or an ISO time.

    Raises:
        ValueError: for anything else.
    """
    position = parse_position(text)
    if isinstance(position, str) or (
        isinstance(position, datetime) and re.fullmatch(r"\d+\s*(ms|s|m|h|d)", text.strip())
    ):
        raise ValueError(f"invalid --until {text!r}: use an offset (42) or an ISO time")
    return position


@dataclass(frozen=True)
class Event:
    """One stored event as read from the stream."""

    offset: int
    routing_key: str
    body: bytes
    properties: Basic.Properties
    headers: dict[str, Any]
    timestamp: datetime | None


@dataclass
class ReplayResult:
    """What a replay read and what became of what it published."""

    read: int
    matched: int
    published: BulkResult
    first_offset: int | None
    last_offset: int | None


def after(event: Event, until: int | datetime | None) -> bool:
    """Whether ``event`` lies past ``--until`` (by offset, or by its timestamp property)."""
    if until is None:
        return False
    if isinstance(until, int):
        return event.offset > until
    return event.timestamp is not None and event.timestamp > until


async def last_offset(
    connection: AbstractConnection, stream: str, idle: float = IDLE
) -> int | None:
    """The offset of the stream's last event now; None for an empty stream.

    Raises:
        ConfigError: when ``stream`` is missing or is not a stream queue.
    """
    last: int | None = None
    peek = read(connection, stream, "last", idle=idle, gap=min(idle, PEEK_GAP))
    async with contextlib.aclosing(peek) as events:
        async for event in events:
            last = event.offset
    return last


async def first_offset(
    connection: AbstractConnection, stream: str, idle: float = IDLE
) -> int | None:
    """The offset of the first event the stream still holds; None for an empty stream."""
    async with contextlib.aclosing(read(connection, stream, "first", idle=idle)) as events:
        async for event in events:
            return event.offset
    return None


async def read(
    connection: AbstractConnection,
    stream: str,
    start: Position,
    *,
    stop: int | None = None,
    idle: float = IDLE,
    gap: float | None = None,
    prefetch: int = PREFETCH,
) -> AsyncGenerator[Event, None]:
    """The events of ``stream`` from ``start`` up to offset ``stop`` (included), or until
    ``idle`` seconds pass with no delivery (``gap`` seconds once one arrived, when given:
    a peek at the last chunk, delivered at once, need not wait long). Each delivery is
    acknowledged once the caller took the event (for a stream that only grants credit;
    nothing is removed).

    Raises:
        ConfigError: when ``stream`` is missing or is not a stream queue.
    """
    channel = await connection.channel()
    try:
        raw = await channel.get_underlay_channel()
        await raw.basic_qos(prefetch_count=prefetch)
        inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

        async def take(message: DeliveredMessage) -> None:
            inbox.put_nowait(message)

        try:
            await raw.basic_consume(stream, take, arguments={STREAM_OFFSET: start})
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ConfigError(f"stream {stream!r} does not exist on the broker") from None
        except aiormq.exceptions.ChannelPreconditionFailed:
            raise ConfigError(
                f"{stream!r} is not a stream queue (declare it with type: stream)"
            ) from None
        taken = 0
        while True:
            try:
                wait = idle if gap is None or taken == 0 else gap
                message = await asyncio.wait_for(inbox.get(), wait)
            except TimeoutError:
                return
            event = _event(message)
            yield event
            taken += 1
            if taken % ACK_EVERY == 0 or inbox.empty():
                # One ack for all taken so far: credit for the broker to send more.
                assert message.delivery_tag is not None
                await raw.basic_ack(message.delivery_tag, multiple=True)
            if stop is not None and event.offset >= stop:
                return
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
            await channel.close()


def _event(message: DeliveredMessage) -> Event:
    raw = message.header.properties
    headers = dict(raw.headers or {})
    offset = headers.pop(STREAM_OFFSET, None)
    if not isinstance(offset, int):
        raise BrokerError(f"a delivery without an {STREAM_OFFSET} header: not a stream")
    props = Basic.Properties(
        content_type=raw.content_type,
        content_encoding=raw.content_encoding,
        headers=headers or None,
        delivery_mode=raw.delivery_mode,
        priority=raw.priority,
        correlation_id=raw.correlation_id,
        reply_to=raw.reply_to,
        expiration=raw.expiration,
        message_id=raw.message_id,
        timestamp=raw.timestamp,
        message_type=raw.message_type,
        user_id=raw.user_id,
        app_id=raw.app_id,
    )
    stamp = raw.timestamp
    if stamp is not None and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return Event(offset, message.routing_key or "", bytes(message.body), props, headers, stamp)


async def replay(
    connection: AbstractConnection,
    publish_many: Callable[..., Any],
    stream: str,
    exchange: str,
    *,
    routing_key: str | None = None,
    start: Position = "first",
    until: int | datetime | None = None,
    where: Sequence[tuple[str, str]] = (),
    limit: int | None = None,
    idle: float = IDLE,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Re-publish the events of ``stream`` from ``start`` to ``exchange`` with confirms.

    ``publish_many`` is a `Publisher.publish_many` (e.g. a `Producer`'s). Each copy keeps
    the event's body, properties and headers and its routing key unless ``routing_key``
    is given, and gets the header ``x-rabbitflow-replayed-from: <stream>@<offset>``.
    Stops at ``until`` (an offset, or a time compared with the events' timestamp
    property), after ``limit`` events matching every ``where`` pair, or at the stream's
    last offset when the replay started.
    """
    end = await last_offset(connection, stream, idle=idle)
    counts = {"read": 0, "matched": 0}
    seen: dict[str, int | None] = {"first": None, "last": None}

    async def copies() -> AsyncIterator[Outgoing]:
        if end is None:
            return
        events = read(connection, stream, start, stop=end, idle=idle)
        async with contextlib.aclosing(events):
            async for event in events:
                if after(event, until):
                    return
                counts["read"] += 1
                if not matches(event.headers, where):
                    continue
                counts["matched"] += 1
                if seen["first"] is None:
                    seen["first"] = event.offset
                seen["last"] = event.offset
                props = event.properties
                headers = dict(event.headers)
                headers[REPLAYED_FROM] = f"{stream}@{event.offset}"
                props.headers = headers
                yield Outgoing(
                    exchange,
                    event.routing_key if routing_key is None else routing_key,
                    event.body,
                    properties=props,
                )
                if limit is not None and counts["matched"] >= limit:
                    return

    published = await publish_many(copies(), progress=progress)
    return ReplayResult(counts["read"], counts["matched"], published, seen["first"], seen["last"])


def describe_position(position: Position) -> str:
    """A position as the summary line shows it."""
    if isinstance(position, datetime):
        return position.isoformat()
    return str(position)


__all__ = [
    "Event",
    "ReplayResult",
    "after",
    "describe_position",
    "first_offset",
    "last_offset",
    "parse_position",
    "parse_until",
    "read",
    "replay",
]
