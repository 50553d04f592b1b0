"""Partitioned queues on the real broker: declared from `expand()` with plain aio-pika, each
key lands in exactly one partition, in publish order; retries and dead letters route back."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue

from rabbitflow.topology import load_text
from rabbitflow.topology.expand import Declarations, expand, physical_queues

pytestmark = pytest.mark.broker

TOPOLOGY = """\
version: 1
exchanges:
  orders: {type: topic}
  events: {type: fanout}
queues:
  ship:
    bind: [{exchange: orders, routing_key: "order.#"}]
    partitions: {count: 4, key: routing_key}
    retry: {max_retries: 1, delay: 50ms}
  audit:
    type: quorum
    bind: [{exchange: events}]
    partitions: {count: 3, key: {header: customer}}
"""


async def declare(channel: AbstractChannel, decls: Declarations) -> dict[str, AbstractQueue]:
    """Declare everything as plain aio-pika calls (the shared declarer lives elsewhere)."""
    exchanges = {"": channel.default_exchange}
    for ex in decls.exchanges:
        exchanges[ex.name] = await channel.declare_exchange(
            ex.name,
            ex.type,
            durable=ex.durable,
            auto_delete=ex.auto_delete,
            internal=ex.internal,
            arguments=dict(ex.arguments),
        )
    queues = {}
    for q in decls.queues:
        queues[q.name] = await channel.declare_queue(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=dict(q.arguments),
        )
    for b in decls.bindings:
        if b.destination_type == "exchange":
            await exchanges[b.destination].bind(
                exchanges[b.source], b.routing_key, arguments=dict(b.arguments)
            )
        else:
            await queues[b.destination].bind(
                exchanges[b.source], b.routing_key, arguments=dict(b.arguments)
            )
    return queues


async def drain(queue: AbstractQueue) -> list[Any]:
    """Every message of the queue, in queue order, as decoded JSON bodies.

    Consumed rather than fetched with basic.get, which quorum queues with a single
    active consumer refuse.
    """
    depth = (await queue.declare()).message_count or 0
    bodies: list[Any] = []
    if depth:
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                bodies.append(json.loads(message.body))
                if len(bodies) == depth:
                    break
    return bodies


async def wait_for_depth(queue: AbstractQueue, depth: int) -> None:
    """Wait (5 s at most) until the queue holds ``depth`` messages."""
    async with asyncio.timeout(5):
        # Polled: the broker announces no change of depth to a client.
        while True:
            if (await queue.declare()).message_count == depth:
                return
            await asyncio.sleep(0.02)


def assert_partitioned_in_order(
    per_queue: dict[str, list[Any]], sent: dict[str, list[int]]
) -> None:
    home: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, list[int]] = defaultdict(list)
    for queue, bodies in per_queue.items():
        for body in bodies:
            home[body["key"]].add(queue)
            seen[body["key"]].append(body["seq"])
    assert {k: len(qs) for k, qs in home.items() if len(qs) != 1} == {}, "one partition per key"
    assert seen == sent, "every message arrived once, in publish order per key"
    assert all(per_queue.values()), "every partition received some keys"


async def test_each_routing_key_lands_in_one_partition_in_publish_order(
    channel: AbstractChannel,
) -> None:
    topology = load_text(TOPOLOGY)
    queues = await declare(channel, expand(topology))
    orders = await channel.get_exchange("orders")
    sent: dict[str, list[int]] = defaultdict(list)
    started = time.monotonic()
    for seq in range(2000):
        key = f"k{seq * 7 % 100}"
        await orders.publish(
            aio_pika.Message(json.dumps({"key": key, "seq": seq}).encode()),
            routing_key=f"order.{key}",
        )
        sent[key].append(seq)
    published = time.monotonic() - started
    partitions = physical_queues(topology, "ship")
    assert partitions == ["ship.p0", "ship.p1", "ship.p2", "ship.p3"]
    per_queue = {name: await drain(queues[name]) for name in partitions}
    print(
        f"2000 confirmed publishes in {published:.2f}s; per partition:",
        {q: len(b) for q, b in per_queue.items()},
    )
    assert sum(len(b) for b in per_queue.values()) == 2000
    assert_partitioned_in_order(per_queue, sent)


async def test_each_header_value_lands_in_one_partition_of_a_quorum_queue(
    channel: AbstractChannel,
) -> None:
    topology = load_text(TOPOLOGY)
    queues = await declare(channel, expand(topology))
    events = await channel.get_exchange("events")
    sent: dict[str, list[int]] = defaultdict(list)
    for seq in range(400):
        key = f"customer-{seq % 40}"
        await events.publish(
            aio_pika.Message(
                json.dumps({"key": key, "seq": seq}).encode(), headers={"customer": key}
            ),
            routing_key="ignored",
        )
        sent[key].append(seq)
    per_queue = {name: await drain(queues[name]) for name in physical_queues(topology, "audit")}
    assert_partitioned_in_order(per_queue, sent)


async def test_a_retry_returns_to_its_own_partition_and_dead_letters_share_one_queue(
    channel: AbstractChannel,
) -> None:
    queues = await declare(channel, expand(load_text(TOPOLOGY)))
    body = json.dumps({"key": "k1", "seq": 1}).encode()
    await channel.default_exchange.publish(aio_pika.Message(body), "ship.p2.retry.50ms")
    await wait_for_depth(queues["ship.p2"], 1)
    others = [
        q for q in ("ship.p0", "ship.p1", "ship.p3") if (await queues[q].declare()).message_count
    ]
    assert others == [], "only ship.p2 gets the retry"
    for partition in ("ship.p2", "ship.p0"):
        await channel.default_exchange.publish(aio_pika.Message(body), partition)
        message = await queues[partition].get(timeout=5)
        await message.reject(requeue=False)  # the broker dead-letters it through ship.dlx
    await wait_for_depth(queues["ship.dlq"], 2)


async def test_a_partition_has_one_active_consumer_and_fails_over_to_the_standby(
    amqp_url: str,
    channel: AbstractChannel,
) -> None:
    await declare(channel, expand(load_text(TOPOLOGY)))
    got: dict[str, list[int]] = {"first": [], "standby": []}
    connections = [await aio_pika.connect(amqp_url) for _ in got]
    try:
        for name, connection in zip(got, connections, strict=True):
            ch = await connection.channel()
            await ch.set_qos(prefetch_count=1)
            queue = await ch.get_queue("ship.p1")

            async def on_message(message: Any, name: str = name) -> None:
                got[name].append(json.loads(message.body)["seq"])
                await message.ack()

            await queue.consume(on_message)
        for seq in range(50):
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"seq": seq}).encode()), "ship.p1"
            )
        await until(lambda: len(got["first"]) == 50)
        assert got["standby"] == [], "the standby receives nothing while the first consumes"
        await connections[0].close()  # the active consumer dies
        for seq in range(50, 100):
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"seq": seq}).encode()), "ship.p1"
            )
        await until(lambda: len(got["standby"]) == 50)
        assert got["first"] + got["standby"] == list(range(100))
    finally:
        for connection in connections:
            await connection.close()


async def until(condition: Any) -> None:
    """Wait (5 s at most) until ``condition()`` is true."""
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_failover_redelivers_the_unacked_message_first_then_the_rest_in_order(
    amqp_url: str, channel: AbstractChannel, queue_type: str
) -> None:
    """Given an active consumer (prefetch=1) that dies holding a message unacked,
    the standby gets that message first (redelivered), then the rest in queue order."""
    topology = load_text(
        f"version: 1\nqueues:\n  fifo: {{type: {queue_type}, single_active_consumer: true}}\n"
    )
    await declare(channel, expand(topology))
    for seq in range(20):
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps({"seq": seq}).encode()), "fifo"
        )
    active, standby = await aio_pika.connect(amqp_url), await aio_pika.connect(amqp_url)
    try:
        held: list[int] = []
        got: list[tuple[int, bool]] = []

        async def hold(message: Any) -> None:  # takes one message and never acks it
            held.append(json.loads(message.body)["seq"])

        async def take(message: Any) -> None:
            got.append((json.loads(message.body)["seq"], message.redelivered))
            await message.ack()

        for connection, callback in ((active, hold), (standby, take)):
            ch = await connection.channel()
            await ch.set_qos(prefetch_count=1)
            await (await ch.get_queue("fifo")).consume(callback)
        await until(lambda: held == [0])
        assert got == []
        await active.close()
        await until(lambda: len(got) == 20)
        assert got == [(0, True)] + [(seq, False) for seq in range(1, 20)]
    finally:
        await active.close()
        await standby.close()
