"""rabbitflow's frame reader (amqp/frames.py) against pamqp, the decoder it stands in for:
the same frames from the same bytes however the socket cuts them, the same errors for
bad ones, and the direct deliveries assembled from them in the broker's order."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

import aiormq
import pamqp.frame
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from rabbitflow.amqp.frames import (
    DirectDeliveries,
    FrameReader,
    decode_deliver,
    decode_frames,
)
from rabbitflow.amqp.replacing import decode_header_replacing


def _deliver(tag: int, **kw: Any) -> Basic.Deliver:
    fields = {"consumer_tag": "ctag1.abc", "exchange": "orders", "routing_key": "order.created"}
    return Basic.Deliver(delivery_tag=tag, **(fields | kw))


def _delivery(tag: int, body: bytes, frame_max: int = 4096, **kw: Any) -> list[Any]:
    props = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        headers={"x-attempt": 2, "nested": {"a": [1, "b"]}},
        message_id=f"m-{tag}",
    )
    parts = [body[i : i + frame_max] for i in range(0, len(body), frame_max)]
    return [_deliver(tag, **kw), ContentHeader(0, len(body), props), *map(ContentBody, parts)]


def _wire(frames: list[Any], channel: int = 1) -> bytes:
    return b"".join(
        pamqp.frame.marshal(f, 0 if isinstance(f, Heartbeat) else channel) for f in frames
    )


def _stream() -> list[Any]:
    frames: list[Any] = [commands.Basic.ConsumeOk(consumer_tag="ctag1.abc"), Heartbeat()]
    for tag in range(1, 40):
        frames += _delivery(tag, random.Random(tag).randbytes(tag * 311), redelivered=tag % 3 == 0)
    frames += _delivery(40, b"")  # a delivery without a body frame
    frames += [commands.Basic.CancelOk(consumer_tag="ctag1.abc"), Basic.Ack(delivery_tag=9)]
    return frames


def _same(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)
    if isinstance(theirs, ContentBody):
        assert ours.value == theirs.value
    elif isinstance(theirs, ContentHeader):
        assert (ours.body_size, dict(ours.properties)) == (
            theirs.body_size,
            dict(theirs.properties),
        )
    elif not isinstance(theirs, Heartbeat):
        assert dict(ours) == dict(theirs)


def _pamqp(data: bytes) -> list[tuple[int, int, Any]]:
    out, at = [], 0
    while at < len(data):
        used, channel, frame = pamqp.frame.unmarshal(data[at:])
        out.append((used, channel, frame))
        at += used
    return out


@pytest.mark.parametrize("seed", range(20))
async def test_any_cut_of_the_socket_gives_pamqps_frames(seed: int) -> None:
    data = _wire(_stream())
    reader = asyncio.StreamReader()
    rnd = random.Random(seed)
    at = 0
    while at < len(data):  # the socket hands over pieces from 1 byte to 3 frames' worth
        step = rnd.choice((1, 7, 8, 13, 500, 4096, 20000))
        reader.feed_data(data[at : at + step])
        at += step
    reader.feed_eof()

    frames = [frame async for frame in FrameReader(reader)]

    expected = _pamqp(data)
    assert [(w, c) for w, c, _ in frames] == [(w, c) for w, c, _ in expected]
    for (_, _, ours), (_, _, theirs) in zip(frames, expected, strict=True):
        _same(ours, theirs)


def test_a_deliver_decodes_as_pamqp_decodes_it() -> None:
    for frame in (
        _deliver(2**63 - 1, redelivered=True),
        _deliver(1, exchange="", routing_key=""),
        _deliver(7, routing_key="ключ.🐇" * 10, consumer_tag="x" * 255),
    ):
        payload = frame.marshal()
        theirs = Basic.Deliver()
        theirs.unmarshal(payload)
        assert dict(decode_deliver(payload, 0)) == dict(theirs)


def test_a_routing_key_that_is_not_utf8_is_decoded_with_replacement_not_refused() -> None:
    # pamqp refuses it, and refusing a frame ends the connection: the broker would hand
    # the same message to the next connection for ever (a wedged queue).
    bad = _wire([_deliver(1, routing_key="ab")]).replace(b"\x02ab", b"\x02\xff\xfe")
    with pytest.raises(pamqp.exceptions.UnmarshalingException):
        pamqp.frame.unmarshal(bad)
    frames: deque[Any] = deque()
    decode_frames(bad, frames)
    assert frames[0][2].routing_key == "\ufffd\ufffd"
    assert frames[0][2].delivery_tag == 1


def _header(**props: Any) -> bytes:
    return _wire([ContentHeader(0, 5, commands.Basic.Properties(**props))])


def test_properties_and_header_keys_that_are_not_utf8_are_decoded_with_replacement() -> None:
    nested = {"kept": 1, "KEY1": "v", "list": [{"KEY2": bytearray(b"\xff raw")}, 2.5, None]}
    good = _header(
        message_id="MSGID",
        content_type="application/json",
        headers=nested,
        delivery_mode=2,
        priority=3,
        app_id="app",
    )
    bad = good.replace(b"MSGID", b"\xffSGID").replace(b"KEY1", b"K\xfeY1")
    bad = bad.replace(b"KEY2", b"\xc3(Y2")
    with pytest.raises(pamqp.exceptions.UnmarshalingException):
        pamqp.frame.unmarshal(bad)
    frames: deque[Any] = deque()
    assert decode_frames(bad, frames) == len(bad)
    header = frames[0][2]
    theirs = pamqp.frame.unmarshal(good)[2]
    assert header.body_size == 5
    p, q = header.properties, theirs.properties
    assert p.message_id == "\ufffdSGID"
    assert p.headers == {
        "kept": 1,
        "K\ufffdY1": "v",
        "list": [{"\ufffd(Y2": bytearray(b"\xff raw")}, 2.5, None],
    }
    for name in ("content_type", "delivery_mode", "priority", "app_id"):
        assert getattr(p, name) == getattr(q, name)


def test_the_replacing_decoder_gives_pamqps_header_for_valid_text() -> None:
    data = _header(
        content_type="text/plain",
        content_encoding="gzip",
        headers={"a": [1, {"b": "c"}], "t": True, "n": -(2**40)},
        delivery_mode=1,
        correlation_id="c",
        reply_to="r",
        expiration="100",
        message_id="m",
        message_type="t",
        user_id="guest",
        app_id="x",
    )
    ours = decode_header_replacing(data[7:-1])
    theirs = pamqp.frame.unmarshal(data)[2]
    assert ours.body_size == theirs.body_size
    assert ours.properties == theirs.properties


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1] + b"\x00",  # frame-end octet
        lambda b: b[:7] + b[7:9] + b"\x00\x09" + b[11:],  # an unknown method
        lambda b: b[:6] + bytes([b[6] - 4]) + b[7:-5] + b"\xce",  # arguments cut short
    ],
)
def test_a_broken_frame_is_an_invalid_frame(damage: Any) -> None:
    with pytest.raises(InvalidFrameError):
        decode_frames(damage(_wire([_deliver(1)])), deque())


def test_part_of_a_frame_waits_for_the_rest() -> None:
    data = _wire(_delivery(1, b"x" * 100))
    frames: deque[Any] = deque()
    used = decode_frames(data[:-3], frames)
    assert [type(f) for _, _, f in frames] == [Basic.Deliver, ContentHeader]
    assert decode_frames(data[used:], frames) == len(data) - used


async def test_a_connection_cut_inside_a_frame_is_a_connection_error() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(_wire([_deliver(1)])[:-4])
    reader.feed_eof()
    with pytest.raises(AMQPConnectionError, match="unexpectedly closed"):
        await FrameReader(reader).__anext__()


async def test_a_closed_connection_ends_the_frames() -> None:
    reader = asyncio.StreamReader()
    reader.feed_eof()
    assert [f async for f in FrameReader(reader)] == []


class _Channel(aiormq.Channel):
    """Just what DirectDeliveries reads of aiormq's channel, without a connection."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.consumers: dict[str, Any] = {"ctag1.abc": None}

    async def _read_content(self, frame: Any, header: Any) -> Any:
        raise AssertionError("not used here")

    async def _Channel__get_content_header(self) -> Any:
        raise AssertionError("not used here")


async def test_direct_deliveries_are_assembled_and_the_rest_goes_on() -> None:
    channel = _Channel()
    arrived: list[Any] = []
    assert DirectDeliveries.install(channel, arrived.append)
    sink = channel.frames
    body = random.Random(0).randbytes(10_000)

    for frame in _delivery(1, body, frame_max=4096) + _delivery(2, b""):
        await sink.put((0, frame))
    await sink.put((0, Basic.Ack(delivery_tag=5)))  # a confirm: the channel's reader's

    assert [(m.delivery_tag, m.body) for m in arrived] == [(1, body), (2, b"")]
    assert arrived[0].header.properties.headers["nested"] == {"a": [1, "b"]}
    queued = sink.queue  # type: ignore[attr-defined]
    assert [type(queued.get_nowait()[1]) for _ in range(queued.qsize())] == [Basic.Ack]


async def test_a_delivery_behind_a_queued_delivery_stays_behind_it() -> None:
    channel = _Channel()
    arrived: list[Any] = []
    DirectDeliveries.install(channel, arrived.append)
    sink = channel.frames
    queued = sink.queue  # type: ignore[attr-defined]
    await sink.put((0, commands.Basic.ConsumeOk(consumer_tag="ctag1.abc")))
    for frame in _delivery(1, b"one"):  # not held up by consume-ok: only wakes a caller
        await sink.put((0, frame))
    assert [m.body for m in arrived] == [b"one"]
    assert [type(queued.get_nowait()[1]) for _ in range(queued.qsize())] == [Basic.ConsumeOk]

    for frame in _delivery(2, b"two", consumer_tag="someone.else") + _delivery(3, b"three"):
        await sink.put((0, frame))

    # 2 is for no consumer of this channel: it goes to the channel's reader (which drops
    # it, as aiormq does), and 3 follows it there, in order.
    assert [m.body for m in arrived] == [b"one"]
    kinds = [type(queued.get_nowait()[1]).__name__ for _ in range(queued.qsize())]
    assert kinds == ["Deliver", "ContentHeader", "ContentBody"] * 2


def test_a_channel_without_aiormqs_parts_is_not_taken_over() -> None:
    channel = _Channel()
    channel.frames = []  # type: ignore[assignment]
    assert DirectDeliveries.install(channel, print) is False
