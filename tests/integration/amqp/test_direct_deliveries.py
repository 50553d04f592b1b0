"""`deliver_directly` on aiormq's real channel (the at-most-once and batch consumers'
fast path): deliveries reach the arrival function in order, in the connection's or the
channel's reader, with no task per delivery; a channel that cannot says so instead of
guessing."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from rabbitflow.amqp.transport import deliver_directly
from tests.helpers import wait_for

pytestmark = pytest.mark.broker


async def test_deliveries_reach_the_arrival_in_order_without_a_task_each(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("direct", durable=True)
        for i in range(50):
            await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), "direct")
        raw = await channel.get_underlay_channel()
        arrived: list[bytes] = []
        tasks: set[asyncio.Task[Any] | None] = set()

        def arrival(message: Any) -> None:
            arrived.append(message.body)
            tasks.add(asyncio.current_task())

        async def per_task(message: Any) -> None:  # aiormq's way: never called here
            raise AssertionError("the consumer callback ran")

        assert deliver_directly(raw, arrival) is True
        await raw.basic_qos(prefetch_count=100)
        await raw.basic_consume(queue.name, per_task, no_ack=True)
        await wait_for(lambda: len(arrived) == 50, timeout=10)
        assert arrived == [str(i).encode() for i in range(50)]
        # No task per delivery: the first ones queue behind basic.consume-ok and reach the
        # arrival in the channel's reader task, the rest in the connection's.
        assert len(tasks) <= 2
    finally:
        await connection.close()


def test_a_channel_that_cannot_deliver_directly_says_so() -> None:
    assert deliver_directly(object(), lambda message: None) is False

    class Offers:
        def __init__(self) -> None:
            self.arrival: Any = None

        def deliver_directly(self, arrival: Any) -> bool:
            self.arrival = arrival
            return True

    own = Offers()
    assert deliver_directly(own, print) is True and own.arrival is print
