"""The in-memory broker's own behaviour where the contract suite cannot reach it cheaply:
virtual time, single active consumer, cycles, direct reply-to rules. No sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import pytest
from pamqp.commands import Basic

from rabbitflow.testing.memory import MemoryBroker
from rabbitflow.testing.memory.connection import MemoryConnection


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _raw(broker: MemoryBroker) -> Any:
    connection = MemoryConnection(broker, f"memory://{broker.name}")
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    return await channel.get_underlay_channel()


async def test_nothing_expires_until_the_clock_moves() -> None:
    broker = MemoryBroker("t", start=1000.0)
    ch = await _raw(broker)
    await ch.queue_declare("q", arguments={"x-message-ttl": 60_000})
    await ch.basic_publish(b"m", routing_key="q")
    assert broker.next_deadline() == 1060.0
    broker.advance(59.999)
    assert broker.depth("q") == 1
    broker.advance(0.001)
    assert broker.depth("q") == 0


async def test_per_message_ttl_expires_only_at_the_head() -> None:
    broker = MemoryBroker("t", start=0.0)
    ch = await _raw(broker)
    await ch.queue_declare("q")
    await ch.basic_publish(b"long", routing_key="q", properties=Basic.Properties(expiration="5000"))
    await ch.basic_publish(b"short", routing_key="q", properties=Basic.Properties(expiration="10"))
    broker.advance(1)
    assert [m.body for m in broker.messages("q")] == [b"long", b"short"]
    broker.advance(5)
    assert broker.messages("q") == []


async def test_expiry_cycle_without_rejection_is_dropped() -> None:
    broker = MemoryBroker("t", start=0.0)
    ch = await _raw(broker)
    await ch.queue_declare(
        "a",
        arguments={
            "x-message-ttl": 10,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "b",
        },
    )
    await ch.queue_declare(
        "b",
        arguments={
            "x-message-ttl": 10,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "a",
        },
    )
    await ch.basic_publish(b"m", routing_key="a")
    broker.advance(0.01)
    assert broker.depth("b") == 1
    broker.advance(0.01)
    assert broker.depth("a") == 0
    assert broker.depth("b") == 0


async def test_single_active_consumer_delivers_to_the_first_only() -> None:
    broker = MemoryBroker("t")
    ch1, ch2 = await _raw(broker), await _raw(broker)
    await ch1.queue_declare("q", arguments={"x-single-active-consumer": True})
    got: list[str] = []

    def taker(name: str) -> Any:
        async def take(message: Any) -> None:
            got.append(name)
            await message.channel.basic_ack(message.delivery.delivery_tag)

        return take

    await ch1.basic_consume("q", taker("one"))
    await ch2.basic_consume("q", taker("two"))
    await ch1.basic_publish(b"m", routing_key="q")
    await _settle()
    await ch1.close()
    await ch2.basic_publish(b"m", routing_key="q")
    await _settle()
    assert got == ["one", "two"]


async def test_reply_to_needs_a_reply_consumer_on_the_channel() -> None:
    ch = await _raw(MemoryBroker("t"))
    props = Basic.Properties(reply_to="amq.rabbitmq.reply-to")
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await ch.basic_publish(b"m", routing_key="q", properties=props)
    assert ch.is_closed


async def test_redeclare_with_other_arguments_is_refused() -> None:
    ch = await _raw(MemoryBroker("t"))
    await ch.queue_declare("q", arguments={"x-message-ttl": 1000})
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="x-message-ttl"):
        await ch.queue_declare("q", arguments={"x-message-ttl": 2000})


async def test_connect_returns_the_registered_broker_for_memory_urls() -> None:
    from rabbitflow.amqp.connection import connect
    from rabbitflow.errors import ConfigError
    from rabbitflow.testing.memory import register, unregister

    broker = register(MemoryBroker("unit-connect"))
    try:
        connection = await connect("memory://unit-connect")
        assert isinstance(connection, MemoryConnection)
        assert connection.broker is broker
        await connection.close()
        assert connection.is_closed
    finally:
        unregister(broker)
    with pytest.raises(ConfigError, match=r"memory://"):
        await connect("http://example.invalid/")


async def _stream_reader(ch: Any, spec: Any = "first") -> list[int]:
    got: list[int] = []

    async def take(message: Any) -> None:
        got.append(message.header.properties.headers["x-stream-offset"])
        await ch.basic_ack(message.delivery.delivery_tag)

    await ch.basic_qos(prefetch_count=2)
    await ch.basic_consume("log", take, arguments={"x-stream-offset": spec})
    await _settle()
    return got


async def test_a_stream_drops_events_past_max_age_on_the_virtual_clock() -> None:
    broker = MemoryBroker("t", start=0.0)
    ch = await _raw(broker)
    await ch.queue_declare(
        "log", durable=True, arguments={"x-queue-type": "stream", "x-max-age": "60s"}
    )
    await ch.basic_publish(b"old", routing_key="log")
    broker.advance(30)
    await ch.basic_publish(b"new", routing_key="log")
    broker.advance(31)
    assert [m.body for m in broker.messages("log")] == [b"new"]
    assert await _stream_reader(ch) == [1]  # offsets are kept: the first one left is 1


async def test_a_stream_keeps_under_max_length_bytes_dropping_the_oldest() -> None:
    broker = MemoryBroker("t", start=0.0)
    ch = await _raw(broker)
    await ch.queue_declare(
        "log", durable=True, arguments={"x-queue-type": "stream", "x-max-length-bytes": 10}
    )
    for body in (b"aaaa", b"bbbb", b"cccc"):
        await ch.basic_publish(body, routing_key="log")
    assert [m.body for m in broker.messages("log")] == [b"bbbb", b"cccc"]
    assert await _stream_reader(ch, 0) == [1, 2]  # an offset before the first: the first


async def test_a_stream_consumer_is_bounded_by_its_prefetch_and_acks_only_give_credit() -> None:
    broker = MemoryBroker("t", start=0.0)
    ch = await _raw(broker)
    await ch.queue_declare("log", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(5):
        await ch.basic_publish(str(i).encode(), routing_key="log")
    held: list[Any] = []

    async def hold(message: Any) -> None:
        held.append(message)

    await ch.basic_qos(prefetch_count=2)
    await ch.basic_consume("log", hold, arguments={"x-stream-offset": "first"})
    await _settle()
    assert len(held) == 2
    await ch.basic_ack(held[1].delivery.delivery_tag, multiple=True)
    await _settle()
    assert len(held) == 4
    await ch.basic_nack(held[3].delivery.delivery_tag, multiple=True, requeue=True)
    await _settle()
    assert [m.body for m in held] == [b"0", b"1", b"2", b"3", b"4"]  # nothing came back
    assert broker.depth("log") == 5
