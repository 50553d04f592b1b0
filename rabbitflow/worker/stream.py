"""A stream consumer's position (DESIGN.md §9): which events settled, what is stored,
and the acks that give the broker credit for more.

On a stream an ack removes nothing: it only tells the broker it may send more (the
prefetch is a credit). So a delivery is acked once its offset is *stored*, not when its
handler returns: the deliveries a crash can re-deliver (settled but not stored yet, or
still running) are then exactly the unacked ones, never more than the prefetch.

One cursor belongs to one channel. After a reconnect a new cursor starts from the last
settled position; the old one's late settles are ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rabbitflow.amqp.transport import CONNECTION_LOST
from rabbitflow.streams.offsets import SettledOffsets
from rabbitflow.topology.schema import RetryPolicy
from rabbitflow.worker.handler import StreamOffset

if TYPE_CHECKING:
    from rabbitflow.streams.offsets import OffsetStore

STREAM_OFFSET = "x-stream-offset"
"""The consumer argument (where to attach) and the delivery header (this event's offset)."""
DEFAULT_STREAM_PREFETCH = 100
"""A stream handler's prefetch without ``prefetch=``: events are read in chunks, so a
prefetch of one would wait a round trip per event."""


@dataclass(frozen=True)
class StreamRoute:
    """Where a stream handler starts, keeps its position and sends what keeps failing."""

    stream: str
    consumer_name: str
    dead_letter_queue: str
    """``<stream>.<consumer_name>.dlq``, declared when the first event goes there."""
    retry: RetryPolicy
    offset: StreamOffset = "next"
    offsets: OffsetStore | None = None


def dead_letter_queue_name(stream: str, consumer_name: str) -> str:
    """A stream consumer's DLQ: ``<stream>.<consumer_name>.dlq``."""
    return f"{stream}.{consumer_name}.dlq"


def offset_of(headers: Any) -> int | None:
    """The ``x-stream-offset`` of a delivery's headers (None when absent or not an int)."""
    value = headers.get(STREAM_OFFSET) if headers else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class StreamCursor:
    """The settled events of one channel's stream consumer, their stored position and
    the acks behind it."""

    def __init__(
        self,
        channel: Any,
        route: StreamRoute,
        position: int | None,
        *,
        log: Any,
    ) -> None:
        self.channel = channel
        """The raw (aiormq) channel whose deliveries this cursor acks."""
        self.route = route
        self.tracker = SettledOffsets(position)
        self.stored = position
        """The position last written to the store (or, without one, acked)."""
        self._tags: collections.deque[tuple[int, int]] = collections.deque()
        """(offset, delivery tag) of the deliveries not acked yet, in stream order."""
        self._flushing: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[Any]] = set()
        self._log = log

    @property
    def position(self) -> int | None:
        """The last offset below which every event started has settled."""
        return self.tracker.position

    def begin(self, offset: int, tag: int) -> bool:
        """An event arrived (in stream order). False for one at or below the position
        (a chunk re-read after a reconnect): it is acked and not run again."""
        position = self.tracker.position
        if position is not None and offset <= position:
            self._ack_one(offset, tag)
            return False
        try:
            self.tracker.start(offset)
        except ValueError:  # already running: the same event twice in one chunk read
            self._ack_one(offset, tag)
            return False
        self._tags.append((offset, tag))
        return True

    def settle(self, offset: int) -> None:
        """The event at ``offset`` was handled or is in its DLQ: store and ack when the
        position moved (one write and one ack for all that settled meanwhile)."""
        self.tracker.settle(offset)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def close(self) -> None:
        """Write the last settled position (a graceful stop re-delivers nothing)."""
        if self._flushing is not None and not self._flushing.done():
            with contextlib.suppress(Exception):
                await self._flushing
        with contextlib.suppress(Exception):
            await self._flush()
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=5)

    async def _flush(self) -> None:
        store = self.route.offsets
        while True:
            position = self.tracker.position
            if position is None or (self.stored is not None and position <= self.stored):
                return
            if store is not None:
                try:
                    await store.store(self.route.consumer_name, self.route.stream, position)
                except Exception as exc:
                    # Not acked either: the broker stops sending at the prefetch, and
                    # the next settle tries again.
                    self._log.error(
                        "stream position not stored; retrying at the next event",
                        consumer_name=self.route.consumer_name,
                        position=position,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    return
            self.stored = position
            self._ack_upto(position)

    def _ack_upto(self, position: int) -> None:
        tag = None
        while self._tags and self._tags[0][0] <= position:
            tag = self._tags.popleft()[1]
        if tag is not None:
            self._send_ack(tag, multiple=True)

    def _ack_one(self, offset: int, tag: int) -> None:
        # A delivery that is not run. With earlier ones unacked its ack rides with
        # theirs (a multiple ack must not pass them); otherwise it is acked alone now.
        if self._tags:
            self._tags.append((min(offset, self._tags[-1][0]), tag))
            return
        self._send_ack(tag, multiple=False)

    def _send_ack(self, tag: int, *, multiple: bool) -> None:
        channel = self.channel
        if channel is None or channel.is_closed:
            return
        task = asyncio.get_running_loop().create_task(
            channel.basic_ack(tag, multiple=multiple, wait=False)
        )
        self._acks.add(task)
        task.add_done_callback(self._acked)

    def _acked(self, task: asyncio.Task[Any]) -> None:
        self._acks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, CONNECTION_LOST):
            self._log.warning("stream ack failed", error=f"{type(exc).__name__}: {exc}")


__all__ = [
    "DEFAULT_STREAM_PREFETCH",
    "STREAM_OFFSET",
    "StreamCursor",
    "StreamRoute",
    "dead_letter_queue_name",
    "offset_of",
]
