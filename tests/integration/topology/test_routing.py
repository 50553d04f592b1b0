"""Routing is proven, not assumed: declare, publish with plain aio-pika, see who got what."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import conflicts, declare
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand

pytestmark = pytest.mark.broker

TOPOLOGY = """\
version: 1
exchanges:
  orders: {type: topic, alternate_exchange: orders.unrouted}
  orders.unrouted: {type: fanout}
  rpc: {type: direct}
  notifications: {type: fanout}
  media: {type: headers}
  audit: {type: topic}
queues:
  one.word: {bind: [{exchange: orders, routing_key: "order.*"}]}
  any.words: {bind: [{exchange: orders, routing_key: "order.#"}]}
  eu.only: {bind: [{exchange: orders, routing_keys: ["order.*.eu", "refund.eu"]}]}
  unrouted: {bind: [{exchange: orders.unrouted}]}
  pricing: {bind: [{exchange: rpc, routing_key: pricing.quote}]}
  stock: {bind: [{exchange: rpc, routing_key: stock.check}]}
  email: {bind: [{exchange: notifications}]}
  sms: {bind: [{exchange: notifications, routing_key: ignored}]}
  hd.video:
    bind: [{exchange: media, match: all, headers: {kind: video, quality: hd}}]
  any.image:
    bind: [{exchange: media, match: any, headers: {kind: image, format: png}}]
  audit.log: {bind: [{exchange: audit, routing_key: "#"}]}
bindings:
  - {source: orders, destination: audit, routing_key: "order.#"}
"""
QUEUES = [
    "one.word",
    "any.words",
    "eu.only",
    "unrouted",
    "pricing",
    "stock",
    "email",
    "sms",
    "hd.video",
    "any.image",
    "audit.log",
]


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractConnection]:
    conn = await connect(amqp_url)
    try:
        assert not conflicts(await declare(conn, expand(load_text(TOPOLOGY))))
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def channel(connection: AbstractConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True)


async def publish(
    channel: AbstractChannel,
    exchange: str,
    key: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> None:
    ex = await channel.get_exchange(exchange, ensure=False)
    await ex.publish(aio_pika.Message(body.encode(), headers=headers), routing_key=key)


async def drain(channel: AbstractChannel) -> dict[str, list[str]]:
    """Every queue's messages, read after the publishes were confirmed (so routed)."""
    got: dict[str, list[str]] = {}
    for name in QUEUES:
        queue = await channel.get_queue(name, ensure=False)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.setdefault(name, []).append(message.body.decode())
    return got


async def test_topic_star_matches_one_word_and_hash_any(channel: AbstractChannel) -> None:
    await publish(channel, "orders", "order.placed", "placed")
    await publish(channel, "orders", "order.placed.eu", "placed-eu")
    await publish(channel, "orders", "order", "bare")

    got = await drain(channel)

    assert got["one.word"] == ["placed"]
    assert got["any.words"] == ["placed", "placed-eu", "bare"]  # '#' matches zero words too
    assert got["eu.only"] == ["placed-eu"]


async def test_alternate_exchange_catches_what_no_binding_wants(
    channel: AbstractChannel,
) -> None:
    await publish(channel, "orders", "invoice.sent", "stray")
    await publish(channel, "orders", "refund.eu", "refund")

    got = await drain(channel)

    assert got == {"unrouted": ["stray"], "eu.only": ["refund"]}


async def test_exchange_to_exchange_binding_forwards_matching_keys(
    channel: AbstractChannel,
) -> None:
    await publish(channel, "orders", "order.shipped", "shipped")
    await publish(channel, "orders", "refund.eu", "refund")  # not order.#: stays out of audit

    got = await drain(channel)

    assert got["audit.log"] == ["shipped"]


async def test_direct_routes_by_exact_key(channel: AbstractChannel) -> None:
    await publish(channel, "rpc", "pricing.quote", "quote")
    await publish(channel, "rpc", "stock.check", "check")
    await publish(channel, "rpc", "pricing", "nobody")

    got = await drain(channel)

    assert got == {"pricing": ["quote"], "stock": ["check"]}


async def test_fanout_ignores_the_routing_key(channel: AbstractChannel) -> None:
    await publish(channel, "notifications", "whatever", "hello")

    assert await drain(channel) == {"email": ["hello"], "sms": ["hello"]}


async def test_headers_all_needs_every_header_and_any_needs_one(
    channel: AbstractChannel,
) -> None:
    await publish(channel, "media", "", "hd", {"kind": "video", "quality": "hd"})
    await publish(channel, "media", "", "sd", {"kind": "video", "quality": "sd"})
    await publish(channel, "media", "", "png-doc", {"kind": "document", "format": "png"})
    await publish(channel, "media", "", "jpeg", {"kind": "image", "format": "jpeg"})
    await publish(channel, "media", "", "none", {"kind": "audio"})

    got = await drain(channel)

    assert got == {"hd.video": ["hd"], "any.image": ["png-doc", "jpeg"]}


DELAY = """\
version: 1
exchanges:
  jobs: {type: fanout}
queues:
  work:
    type: {type}
    bind: [{exchange: jobs}]
    retry: {max_retries: 1, delay: 300ms}
  bystander: {bind: [{exchange: jobs}]}
"""


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_delay_queue_moves_its_message_back_to_its_queue_only_after_the_ttl(
    amqp_url: str, queue_type: str
) -> None:
    conn = await connect(amqp_url)
    try:
        text = DELAY.replace("{type}", queue_type)
        assert not conflicts(await declare(conn, expand(load_text(text))))
        channel = await conn.channel(publisher_confirms=True)
        work = await channel.get_queue("work", ensure=False)
        bystander = await channel.get_queue("bystander", ensure=False)
        started = time.monotonic()
        # What a retry does: publish the copy to the delay queue through the default exchange.
        await channel.default_exchange.publish(aio_pika.Message(b"again"), "work.retry.300ms")

        assert await work.get(no_ack=True, fail=False) is None  # not before the TTL
        message = None
        while message is None and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
            message = await work.get(no_ack=True, fail=False)
        elapsed = time.monotonic() - started

        assert message is not None
        assert message.body == b"again"
        assert elapsed >= 0.25
        assert await bystander.get(no_ack=True, fail=False) is None
        retry = await channel.get_queue("work.retry.300ms", ensure=False)
        assert await retry.get(no_ack=True, fail=False) is None
    finally:
        await conn.close()
