"""rabbitflow's frame reader on a real broker: what aiormq's reader delivers, it delivers
(bodies of every size across frames, headers, many deliveries in one read), and the
aiormq reader stays one setting away."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import aio_pika
import pytest

from rabbitflow.amqp import frames
from rabbitflow.amqp.connection import connect, connect_with
from rabbitflow.amqp.transport import deliver_directly
from rabbitflow.settings import Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.broker

# 0, one frame, exactly a frame, one byte more, several frames (frame_max is 128 KiB).
SIZES = [0, 1, 1000, 131_064, 131_065, 3 * 131_072 + 5, 2_000_000]


async def _fill(amqp_url: str, queue: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue)
        for i, body in enumerate(bodies):
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers={"i": i, "nested": {"list": [1, "two"]}}), queue
            )


@pytest.mark.parametrize("reader", ["rabbitflow", "aiormq"])
async def test_every_body_size_arrives_whole_through_either_reader(
    amqp_url: str, reader: Any
) -> None:
    rnd = random.Random(7)
    bodies = [rnd.randbytes(n) for n in SIZES] * 3
    await _fill(amqp_url, "sizes", bodies)
    connection = await connect(amqp_url, frame_reader=reader)
    try:
        underlay = connection.transport.connection  # type: ignore[union-attr]
        assert isinstance(underlay, frames.Connection) is (reader == "rabbitflow")
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=5)
        queue = await channel.get_queue("sizes", ensure=False)
        got: list[tuple[int, bytes]] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append((cast(int, message.headers["i"]), message.body))
            assert message.headers["nested"] == {"list": [1, "two"]}
            await message.ack()

        await queue.consume(on_message)
        await wait_for(lambda: len(got) == len(bodies), timeout=30)
        assert got == list(enumerate(bodies))
    finally:
        await connection.close()


async def test_direct_deliveries_over_rabbitflows_reader_keep_order_and_bodies(
    amqp_url: str,
) -> None:
    rnd = random.Random(11)
    bodies = [rnd.randbytes(rnd.choice(SIZES[:6])) for _ in range(300)]
    await _fill(amqp_url, "direct-sizes", bodies)
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        arrived: list[Any] = []
        assert deliver_directly(raw, arrived.append)
        await raw.basic_qos(prefetch_count=50)

        async def never(message: Any) -> None:
            raise AssertionError("a delivery went to a task")

        await raw.basic_consume("direct-sizes", never)
        acked = 0
        while acked < len(bodies):  # ack what arrived, as the at-most-once runs do
            await wait_for(lambda n=acked: len(arrived) > n, timeout=10)  # type: ignore[misc]
            acked = len(arrived)
            await raw.basic_ack(arrived[-1].delivery_tag, multiple=True)
            await asyncio.sleep(0)
        assert [m.body for m in arrived] == bodies
        assert [m.header.properties.headers["i"] for m in arrived] == list(range(300))
        assert [m.delivery_tag for m in arrived] == list(range(1, 301))
    finally:
        await connection.close()


@pytest.mark.parametrize("reader", ["rabbitflow", "aiormq"])
async def test_the_setting_chooses_the_reader_of_every_settings_connection(
    amqp_url: str, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RABBITFLOW_FRAME_READER reaches connect_with: the worker's, CLI sessions', migrate's.
    monkeypatch.setenv("RABBITFLOW_FRAME_READER", reader)
    connection = await connect_with(Settings(url=amqp_url))
    try:
        underlay = connection.transport.connection  # type: ignore[union-attr]
        assert isinstance(underlay, frames.Connection) is (reader == "rabbitflow")
    finally:
        await connection.close()
