"""Reading AMQP frames faster than aiormq does, behind aiormq's own connection and channel.

aiormq reads each frame with three ``readexactly`` calls under a lock, copies it through a
``BytesIO`` and decodes it with pamqp; every frame then crosses an ``asyncio.Queue`` to the
channel's reader task, which awaits the content header and body frames one by one before a
delivery exists. On a busy consumer that is most of the CPU a message costs (measured in
benchmarks/README.md: aiormq and pamqp 40-47 %, asyncio another quarter).

Two parts replace those steps and keep everything else of aiormq:

- `FrameReader`: what aiormq's connection reader iterates over. It takes whatever the
  socket has (one ``read``), cuts every whole frame out of it, and decodes the two frames a
  consumer mostly sees itself: ``basic.deliver`` (five fields) and content bodies (the
  bytes). Everything else is decoded by pamqp, as before, and an invalid frame raises
  aiormq's `InvalidFrameError`, as before. `Connection` is aiormq's connection with it.
- `DirectDeliveries`: stands in for a channel's frame queue, so that the connection's
  reader hands it each frame of the channel. A ``basic.deliver`` for one of the channel's
  consumers and the content frames after it are assembled right there into aiormq's
  `DeliveredMessage` and given to a plain function: no queue, no channel task, no task
  per delivery. Any other frame goes on to the channel's queue, in order, and a delivery
  never overtakes an earlier delivery still on that queue.

Text a producer chose (routing key, short-string properties, header keys) that is not
UTF-8 is decoded with U+FFFD in place of the bad bytes, not refused: refusing the frame
ends the connection, and the broker would deliver the same message to the next one.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import aiormq
import pamqp.frame
import structlog
from aio_pika.abc import UnderlayConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

from rabbitflow.amqp.replacing import decode_header_replacing

log = structlog.get_logger("rabbitflow.amqp")

READ_SIZE = 256 * 1024
"""Bytes asked of the socket per read: a few hundred small deliveries."""

_FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
_METHOD_INDEX = struct.Struct(">I")  # class id << 16 | method id
_DELIVERY_TAG = struct.Struct(">qB")  # delivery tag (signed, as pamqp has it), "redelivered"
_FRAME_END = 0xCE
_METHOD, _HEADER, _BODY = 1, 2, 3
_DELIVER = Basic.Deliver.index

Frame = tuple[int, int, Any]
"""What aiormq's connection reader takes: (bytes on the wire, channel number, frame)."""


def decode_deliver(payload: bytes, at: int, errors: str = "strict") -> Basic.Deliver:
    """A ``basic.deliver`` from its arguments at ``at`` in ``payload``, as pamqp would
    decode it (short strings as UTF-8, strict unless ``errors`` says otherwise), without
    pamqp's generic field walk.

    Raises:
        UnicodeDecodeError: for a string that is not UTF-8 (pamqp raises the same), when
            ``errors`` is ``"strict"``.
        IndexError, struct.error: for arguments cut short.
    """
    size = payload[at]
    at += 1
    consumer_tag = payload[at : at + size].decode("utf-8", errors)
    at += size
    delivery_tag, bits = _DELIVERY_TAG.unpack_from(payload, at)
    at += 9
    size = payload[at]
    at += 1
    exchange = payload[at : at + size].decode("utf-8", errors)
    at += size
    size = payload[at]
    at += 1
    if at + size > len(payload):
        raise IndexError("routing key cut short")
    deliver: Basic.Deliver = Basic.Deliver.__new__(Basic.Deliver)
    deliver.consumer_tag = consumer_tag
    deliver.delivery_tag = delivery_tag
    deliver.redelivered = bool(bits & 1)
    deliver.exchange = exchange
    deliver.routing_key = payload[at : at + size].decode("utf-8", errors)
    return deliver


def _not_utf8(channel: int, frame: str) -> None:
    log.warning(
        "a frame's text is not UTF-8: decoded with U+FFFD in place of the bad bytes",
        channel=channel,
        frame=frame,
    )


def decode_frames(data: bytes, into: deque[Frame]) -> int:
    """Decode every whole frame at the start of ``data`` into ``into``; returns the bytes
    used (a frame cut off at the end is left for the next read).

    Raises:
        InvalidFrameError: a frame that does not end with the frame-end octet, or that
            pamqp (or `decode_deliver`) cannot decode.
    """
    end = len(data)
    at = 0
    head = _FRAME_HEAD.unpack_from
    while end - at >= 8:
        kind, channel, size = head(data, at)
        stop = at + 7 + size  # the frame-end octet
        if stop >= end:
            break
        if data[stop] != _FRAME_END:
            raise InvalidFrameError(f"frame on channel {channel} does not end with 0xCE")
        try:
            if kind == _BODY:
                frame: Any = ContentBody(data[at + 7 : stop])
            elif kind == _METHOD and _METHOD_INDEX.unpack_from(data, at + 7)[0] == _DELIVER:
                frame = _deliver(data[at + 11 : stop], channel)
            else:
                frame = _pamqp(data, at, stop, kind, channel)
        except (PAMQPException, ValueError, IndexError, struct.error) as exc:
            raise InvalidFrameError(str(exc) or type(exc).__name__) from exc
        into.append((size + 8, channel, frame))
        at = stop + 1
    return at


def _deliver(payload: bytes, channel: int) -> Basic.Deliver:
    # A producer chooses the routing key (any bytes, to a topic exchange bound with "#"):
    # refusing the frame would end the connection, and the broker would deliver the same
    # message again to the next one, for ever. So text that is not UTF-8 is replaced.
    try:
        return decode_deliver(payload, 0)
    except UnicodeDecodeError:
        _not_utf8(channel, "basic.deliver")
        return decode_deliver(payload, 0, errors="replace")


def _pamqp(data: bytes, at: int, stop: int, kind: int, channel: int) -> Any:
    try:
        return pamqp.frame.unmarshal(data[at : stop + 1])[2]
    except PAMQPException as exc:
        # As for the routing key: a producer chooses the properties and header keys.
        if kind != _HEADER or not isinstance(exc.__cause__, UnicodeDecodeError):
            raise
    _not_utf8(channel, "content header")
    return decode_header_replacing(data[at + 7 : stop])


class FrameReader:
    """The frames of one connection, decoded a socket read at a time (see the module)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self._rest = b""
        self._frames: deque[Frame] = deque()

    def __aiter__(self) -> FrameReader:
        return self

    async def __anext__(self) -> Frame:
        frames = self._frames
        while not frames:
            await self._read()
        return frames.popleft()

    async def _read(self) -> None:
        try:
            data = await self.reader.read(READ_SIZE)
        except ConnectionResetError as exc:
            raise AMQPConnectionError(f"Server connection reset: {exc!r}") from exc
        except ConnectionError as exc:
            raise AMQPConnectionError(f"Server connection error: {exc!r}") from exc
        except OSError as exc:
            raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc
        if not data:
            if self._rest:
                raise AMQPConnectionError(
                    f"Server connection unexpectedly closed with {len(self._rest)} bytes "
                    "of a frame read"
                )
            raise StopAsyncIteration
        if self._rest:
            data = self._rest + data
        used = decode_frames(data, self._frames)
        self._rest = data[used:] if used < len(data) else b""


_AIORMQ_READER = getattr(aiormq.Connection, "_Connection__reader", None)
"""aiormq's connection reader loop (aiormq 6 and 7): ``async for`` over the frames it is
given, channel 0 handled, the rest put on each channel's ``frames`` queue."""


class Connection(aiormq.Connection):
    """aiormq's connection, reading with `FrameReader` once the handshake is done (the
    handshake's few frames still go through aiormq's own reader)."""

    async def _Connection__reader(self, frame_receiver: Any) -> None:
        # aiormq's reader loop (channel 0, heartbeats, routing to channels) over our frames;
        # over aiormq's own if its receiver is not the StreamReader wrapper we know.
        stream = getattr(frame_receiver, "reader", None)
        frames = FrameReader(stream) if isinstance(stream, asyncio.StreamReader) else frame_receiver
        assert _AIORMQ_READER is not None  # Underlay does not build one otherwise
        await _AIORMQ_READER(self, frames)


class Underlay(UnderlayConnection):
    """aio-pika's underlay with `Connection` in place of aiormq's (aiormq's own where the
    aiormq installed has no reader loop of the shape `Connection` relies on)."""

    @classmethod
    async def make_connection(
        cls, url: Any, timeout: Any = None, **kwargs: Any
    ) -> aiormq.abc.AbstractConnection:
        kind = Connection if _AIORMQ_READER is not None else aiormq.Connection
        connection = kind(url, **kwargs)
        await asyncio.wait_for(connection.connect(), timeout=timeout)
        await connection.ready()
        return connection


Arrival = Callable[[DeliveredMessage], None]


def _arrive(arrival: Arrival, message: DeliveredMessage) -> None:
    try:
        arrival(message)
    except Exception:  # an error here would end the reader it runs in
        log.exception("delivery arrival failed", delivery_tag=message.delivery_tag)


class DirectDeliveries:
    """A channel's frame queue, as the connection's reader sees it, that assembles the
    channel's deliveries and hands each to ``arrival`` (see the module).

    The channel's own reader task keeps reading the real queue (``get`` and
    ``task_done`` are the queue's); only what the connection puts goes through here.
    Every other frame goes on to the queue, and so does a delivery for a consumer the
    channel does not know (aiormq's reader drops it, as before). A delivery taken here
    may pass frames of other kinds still queued (``basic.consume-ok``, say, which only
    wakes the caller of ``basic_consume``), never another delivery: while one that went
    through the queue is still there, the ones after it follow it, and the channel's
    reader hands those to ``arrival`` too, in place of a task for the consumer's
    callback. Every delivery reaches ``arrival`` once, in the order the broker sent them.
    """

    @classmethod
    def install(cls, channel: aiormq.Channel, arrival: Arrival) -> bool:
        """Put one in front of ``channel``'s queue; False when the channel lacks the
        parts of aiormq 7 this replaces (its ``frames`` queue, ``_on_deliver_frame``,
        ``_read_content`` and the content-header read)."""
        if (
            getattr(channel, "_Channel__get_content_header", None) is None
            or getattr(channel, "_read_content", None) is None
            or not hasattr(channel, "_on_deliver_frame")
            or not isinstance(getattr(channel, "frames", None), asyncio.Queue)
        ):
            return False
        sink = cls(channel, arrival)
        channel._on_deliver_frame = sink._queued_delivery  # type: ignore[method-assign]
        channel.frames = sink  # type: ignore[assignment]
        return True

    def __init__(self, channel: aiormq.Channel, arrival: Arrival) -> None:
        self.queue: asyncio.Queue[Any] = channel.frames
        self._channel = channel
        self._consumers = channel.consumers
        self._arrival = arrival
        self._read_header = channel._Channel__get_content_header  # type: ignore[attr-defined]
        self._read_content = channel._read_content
        self._queued = 0
        """Deliveries put on the queue and not yet read back by the channel's reader."""
        self._deliver: Basic.Deliver | None = None
        self._header: ContentHeader | None = None
        self._parts: list[bytes] = []
        self._left = 0

    async def put(self, item: tuple[int, Any]) -> None:
        if self._take(item[1]):
            return
        await self.queue.put(item)

    def put_nowait(self, item: tuple[int, Any]) -> None:
        if not self._take(item[1]):
            self.queue.put_nowait(item)

    def _take(self, frame: Any) -> bool:
        """True when ``frame`` is part of a delivery taken here."""
        deliver = self._deliver
        if deliver is None:
            if type(frame) is not Basic.Deliver:
                return False
            if self._queued or frame.consumer_tag not in self._consumers:
                self._queued += 1
                return False
            self._deliver = frame
            return True
        header = self._header
        if header is None:
            if type(frame) is not ContentHeader:
                raise InvalidFrameError(f"expected a content header, got {frame!r}")
            self._header = header = frame
            self._left = frame.body_size or 0
        else:
            if type(frame) is not ContentBody:
                raise InvalidFrameError(f"expected a content body, got {frame!r}")
            self._parts.append(frame.value)
            self._left -= len(frame.value)
        if self._left <= 0:
            self._deliver_now(deliver, header)
        return True

    async def _queued_delivery(self, frame: Basic.Deliver) -> None:
        # aiormq's `_on_deliver_frame` for a delivery that went through the queue, but for
        # the last step: it goes to `arrival` instead of to the consumer's callback in a
        # task of its own. One for a consumer cancelled meanwhile is dropped, as aiormq
        # drops it (the broker requeues it with the channel).
        try:
            header = await self._read_header()
            message = await self._read_content(frame, header)
        finally:
            self._queued -= 1
        if frame.consumer_tag in self._consumers:
            _arrive(self._arrival, message)

    def _deliver_now(self, deliver: Basic.Deliver, header: ContentHeader) -> None:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        message = DeliveredMessage(
            delivery=deliver, header=header, body=body, channel=self._channel
        )
        self._deliver = self._header = None
        self._parts = []
        _arrive(self._arrival, message)

    # The rest of the queue's interface, for anything else that looks at channel.frames.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


__all__ = [
    "Connection",
    "DirectDeliveries",
    "FrameReader",
    "Underlay",
    "decode_deliver",
    "decode_frames",
]
