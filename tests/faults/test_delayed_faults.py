"""Delayed messages survive their broker: a node of our own is stopped and restarted, then
killed with -9 and restarted, while confirmed delayed messages wait in the ladder (§8)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import aio_pika
import pytest

from rabbitflow import Producer
from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import Status, declare
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand
from tests.faults.nodes import Node

pytestmark = pytest.mark.slow

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic, delayed: true}
queues:
  due:
    type: quorum
    bind: [{exchange: orders, routing_key: "order.*"}]
"""


@pytest.fixture(scope="module")
def delay_node() -> Iterator[Node]:
    """A node of this module's own (index 7: ports 5687 / 25687), wiped first."""
    # RabbitMQ retries an unconfirmed dead-letter move after
    # dead_letter_worker_publisher_confirm_timeout (180 s by default); 10 s here keeps the
    # kill -9 case (a repaired level, docs/delayed-delivery.md) from waiting minutes.
    n = Node(7, advanced="[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 10000}]}].")
    n.stop()
    n.prepare()
    n.start()
    try:
        yield n
    finally:
        n.stop()


async def _receive(url: str, count: int, timeout: float) -> tuple[dict[int, float], int]:
    """Body → first arrival time of what reaches ``due``, and the number of duplicates,
    reconnecting while the node recovers."""
    got: dict[int, float] = {}
    duplicates = 0
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        with contextlib.suppress(aio_pika.exceptions.AMQPException, ConnectionError, OSError):
            connection = await aio_pika.connect(url, timeout=5)
            async with connection:
                channel = await connection.channel()
                queue = await channel.get_queue("due")
                while len(got) < count and time.monotonic() < deadline:
                    m = await queue.get(no_ack=False, fail=False)
                    if m is None:
                        await asyncio.sleep(0.2)
                        continue
                    n = int(m.body)
                    if n in got:
                        # at-least-once dead-lettering: a move the node had not recorded
                        # before it stopped is done again after the restart.
                        duplicates += 1
                    got.setdefault(n, time.time())
                    await m.ack()
        await asyncio.sleep(0.5)
    return got, duplicates


async def _declare_again(url: str) -> list[str]:
    """What a worker does on (re)connecting: declare the topology; the ladder queues it
    had to repair."""
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = await connect(url)
            try:
                results = await declare(connection, expand(load_text(TOPOLOGY)))
            finally:
                await connection.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)  # the node is still recovering
            continue
        return [r.name for r in results if r.status is Status.REPAIRED]


@pytest.mark.timeout(480)  # a node restart after kill -9 can take a minute on 2 shared cores
@pytest.mark.parametrize("fault", ["stop", "kill9"])
async def test_confirmed_delayed_messages_survive_the_node(delay_node: Node, fault: str) -> None:
    """After the restart a worker reconnects and declares its topology again; this test
    does the same (``declare``). After a kill -9 moments after the ladder was created,
    RabbitMQ 3.10 can bring its newest queue back as a member without a leader
    (docs/delayed-delivery.md): declare repairs it, and every confirmed message arrives."""
    vhost = f"rf-delay-{fault}-{time.monotonic_ns()}"
    await asyncio.to_thread(delay_node.add_vhost, vhost)
    url = delay_node.url(vhost)
    connection = await connect(url)
    await declare(connection, expand(load_text(TOPOLOGY)))
    await connection.close()
    delays = {n: 2 + n % 7 for n in range(40)}  # 2…8 s
    sent = time.time()
    async with Producer(url) as producer:
        for n, d in delays.items():
            await producer.publish("orders", "order.later", n, delay=d)  # confirmed
    if fault == "stop":
        await asyncio.to_thread(delay_node.stop)
    else:
        await asyncio.to_thread(delay_node.kill9)
    await asyncio.sleep(1)
    await asyncio.to_thread(delay_node.start)
    restarted = time.time()
    repaired = await _declare_again(url)
    # A level repaired after the restart is written to again only when the dead-letter
    # workers of the levels above retry: RabbitMQ's own timers (60 s for the enqueue
    # that found no leader, then `dead_letter_worker_publisher_confirm_timeout`, 10 s on
    # this node, 180 s by default).
    got, duplicates = await _receive(url, len(delays), timeout=330 if repaired else 90)
    last = max(got.values(), default=restarted) - restarted
    print(
        f"{fault}: node back after {restarted - sent:.1f}s, repaired {repaired}, "
        f"{len(got)} arrived (the last {last:.0f}s after the restart), {duplicates} dup"
    )
    if len(got) < len(delays):
        held = await asyncio.to_thread(
            delay_node.ctl, "list_queues", "-p", vhost, "name", "messages", "type"
        )
        pytest.fail(f"missing: {sorted(set(delays) - set(got))}; queues:\n{held}")
    early = [n for n, t in got.items() if t < sent + delays[n]]
    assert early == []
    assert duplicates <= len(delays)
    await asyncio.to_thread(delay_node.delete_vhost, vhost)
