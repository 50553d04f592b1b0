"""Compression end to end on the real broker (DESIGN.md §8): gzip on publish, decoded
before validation, bad gzip / bombs / unknown encodings dead-lettered, memory flat."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import aio_pika
import psutil
import pytest
from pydantic import BaseModel

from rabbitflow import App, Producer
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.helpers import drain, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  events: {type: topic}
queues:
  work:
    dead_letter: true
    bind: [{exchange: events, routing_key: "ev.*"}]
  raw:
    dead_letter: true
    bind: [{exchange: events, routing_key: "raw.*"}]
  tap:
    bind: [{exchange: events, routing_key: "#"}]
"""


class Event(BaseModel):
    id: int
    text: str


async def publish_raw(amqp_url: str, key: str, body: bytes, encoding: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("events")
        message = aio_pika.Message(body, content_type="application/json", content_encoding=encoding)
        await exchange.publish(message, routing_key=key)


async def test_gzip_round_trip_and_min_size(amqp_url: str, channel: Any) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url, declare=True)
    got: list[Event] = []

    @app.handler("work")
    async def handle(event: Event) -> None:
        got.append(event)

    async with app:
        await app.publish("events", "ev.a", Event(id=1, text="x" * 10_000), compress=True)
        await app.publish("events", "ev.b", Event(id=2, text="small"))
        await wait_for(lambda: len(got) == 2, timeout=10)
    assert sorted(e.id for e in got) == [1, 2] and got[0].text in ("x" * 10_000, "small")
    tapped = {m.routing_key: m for m in await drain(channel, "tap")}
    assert tapped["ev.a"].content_encoding == "gzip" and len(tapped["ev.a"].body) < 1000
    assert gzip.decompress(tapped["ev.a"].body).startswith(b'{"id":1')
    assert tapped["ev.b"].content_encoding is None

    settings = Settings(url=amqp_url, compress_min_size="1KiB")
    async with Producer(settings=settings) as producer:
        await producer.publish("events", "raw.big", b"y" * 2000)
        await producer.publish("events", "raw.small", b"y" * 1000)
        await producer.publish("events", "raw.forced-off", b"y" * 2000, compress=False)
    tapped = {m.routing_key: m for m in await drain(channel, "tap")}
    assert tapped["raw.big"].content_encoding == "gzip"
    assert tapped["raw.small"].content_encoding is None
    assert tapped["raw.forced-off"].content_encoding is None


async def test_deflate_decoded_unknown_encoding_only_for_bytes(amqp_url: str, channel: Any) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url, declare=True)
    events: list[Event] = []
    raws: list[bytes] = []

    @app.handler("work")
    async def handle(event: Event) -> None:
        events.append(event)

    @app.handler("raw")
    async def handle_raw(body: bytes) -> None:
        raws.append(body)

    async with app:
        await publish_raw(amqp_url, "ev.d", zlib.compress(b'{"id":3,"text":"d"}'), "deflate")
        await publish_raw(amqp_url, "ev.br", b"\x0b\x02\x80", "br")
        await publish_raw(amqp_url, "raw.br", b"\x0b\x02\x80", "br")
        await publish_raw(amqp_url, "raw.gz", gzip.compress(b"plain"), "gzip")
        await wait_for(lambda: len(events) == 1 and len(raws) == 2, timeout=10)
        dead = await _dead(channel, "work.dlq", 1)
    assert events == [Event(id=3, text="d")]
    assert sorted(raws) == [b"\x0b\x02\x80", b"plain"]
    assert "content encoding 'br' is not decoded" in str(dead[0].headers["x-rabbitflow-error"])


async def _dead(channel: Any, queue: str, count: int) -> list[Any]:
    out: list[Any] = []

    async def enough() -> bool:
        out.extend(await drain(channel, queue))
        return len(out) >= count

    await wait_for(enough, timeout=10)
    return out


async def test_bad_gzip_and_a_bomb_are_dead_lettered_memory_flat(
    amqp_url: str, channel: Any
) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url, declare=True)
    got: list[Event] = []

    @app.handler("work")
    async def handle(event: Event) -> None:
        got.append(event)

    # 1 GiB of zeros gzips to ~1 MiB: inflated whole it would take a GiB of memory.
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    bomb = b"".join(inflater.compress(chunk) for _ in range(1024)) + inflater.flush()
    assert len(bomb) < 2 * 1024 * 1024
    process = psutil.Process()
    async with app:
        before = process.memory_info().rss
        await publish_raw(amqp_url, "ev.bad", b"\x1f\x8bnot gzip at all", "gzip")
        for _ in range(3):
            await publish_raw(amqp_url, "ev.bomb", bomb, "gzip")
        await publish_raw(amqp_url, "ev.ok", gzip.compress(b'{"id":9,"text":"ok"}'), "gzip")
        dead = await _dead(channel, "work.dlq", 4)
        await wait_for(lambda: len(got) == 1, timeout=10)
        grown = process.memory_info().rss - before
    errors = sorted(str(m.headers["x-rabbitflow-error"]) for m in dead)
    assert len(errors) == 4
    assert sum("does not decompress as gzip" in e for e in errors) == 1
    assert sum("inflates past the 16777216-byte limit" in e for e in errors) == 3
    assert got == [Event(id=9, text="ok")]
    assert grown < 100 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
