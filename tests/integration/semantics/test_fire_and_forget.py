"""Fire-and-forget publishing, ``confirm=False`` (DESIGN.md §8), on the real broker."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from rabbitflow import MessageTooLarge, Producer
from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand
from tests.helpers import message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  orders.all:
    bind: [{exchange: orders, routing_key: "order.*"}]
"""


@pytest.fixture
async def producer(amqp_url: str) -> Any:
    connection = await connect(amqp_url)
    await declare(connection, expand(load_text(TOPOLOGY)))
    await connection.close()
    async with Producer(amqp_url) as p:
        yield p


async def test_unconfirmed_publishes_arrive_and_unroutable_is_silent(
    producer: Producer, channel: Any
) -> None:
    for n in range(100):
        await producer.publish("orders", "order.placed", {"n": n}, confirm=False)
    # not mandatory: nothing is raised for a message that routes nowhere
    await producer.publish("orders", "nowhere", {"n": -1}, confirm=False)
    result = await producer.publish_many(
        (Outgoing("orders", "order.bulk", {"n": n}) for n in range(1000)), confirm=False
    )
    assert result.ok and len(result.written) == 1000 and result.confirmed == []

    async def landed() -> bool:
        return await message_count(channel, "orders.all") == 1100

    await wait_for(landed, timeout=10)
    # the confirmed path still works beside it
    await producer.publish("orders", "order.placed", {"n": "confirmed"})


async def test_local_errors_still_raise(amqp_url: str) -> None:
    settings = Settings(url=amqp_url, max_message_size="1KiB")
    async with Producer(settings=settings) as producer:
        with pytest.raises(MessageTooLarge):
            await producer.publish("orders", "order.x", b"x" * 2000, confirm=False)


def test_cli_no_confirm(amqp_url: str) -> None:
    connect_and_declare = [sys.executable, "-m", "rabbitflow", "publish", "", "q1", '{"a":1}']
    out = subprocess.run(
        [*connect_and_declare, "--no-confirm", "--count", "5", "--url", amqp_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "5 written (no confirms)" in out.stdout
