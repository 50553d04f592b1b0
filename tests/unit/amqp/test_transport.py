"""The transport seam: URL schemes come from a registry, never from an import of the
testing package; the in-memory broker answers the same `ConnectionState` as aiormq's
adapter, broker alarms included. No sockets."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from rabbitflow.amqp.connection import Link, connect, is_blocked, is_open
from rabbitflow.amqp.publish import Publisher
from rabbitflow.amqp.transport import (
    CONNECTION_LOST,
    ConnectionState,
    register_scheme,
    registered_schemes,
    unregister_scheme,
)
from rabbitflow.errors import ConfigError, PublishTimeout
from rabbitflow.testing.memory import MemoryBroker, register, unregister


@pytest.fixture
def broker() -> MemoryBroker:
    made = register(MemoryBroker(f"t-{uuid.uuid4().hex[:8]}"))
    yield made
    unregister(made)


def test_memory_urls_connect_without_importing_the_testing_package_first() -> None:
    """A fresh interpreter: connect() finds ``memory`` through the entry point."""
    code = (
        "import asyncio, sys\n"
        "from rabbitflow.amqp.connection import connect\n"
        "assert not [m for m in sys.modules if m.startswith('rabbitflow.testing')]\n"
        "async def main():\n"
        "    c = await connect('memory://seam')\n"
        "    print(type(c).__name__)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "MemoryConnection"


async def test_an_unknown_scheme_is_one_clear_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        await connect("redis://h/")
    assert str(info.value) == (
        "not an AMQP URL: redis://h/ (expected amqp://, amqps://, "
        + ", ".join(f"{s}://" for s in registered_schemes())
        + ")"
    )
    assert "memory" in registered_schemes()


async def test_a_registered_scheme_is_opened_by_its_opener(broker: MemoryBroker) -> None:
    from rabbitflow.testing.memory import connect_memory

    opened: list[str] = []

    async def opener(url: str):  # type: ignore[no-untyped-def]
        opened.append(url)
        return await connect_memory(f"memory://{broker.name}")

    register_scheme("fake", opener)
    try:
        connection = await connect("fake://x")
    finally:
        unregister_scheme("fake")
    assert opened == ["fake://x"]
    assert is_open(connection)


async def test_memory_connections_answer_the_connection_state(broker: MemoryBroker) -> None:
    connection = await connect(f"memory://{broker.name}")
    assert isinstance(connection, ConnectionState)
    assert is_open(connection) and not is_blocked(connection)
    broker.block()
    assert is_blocked(connection)
    broker.unblock()
    assert not is_blocked(connection)
    await connection.close()
    assert not is_open(connection)


async def test_a_blocked_broker_turns_a_publish_into_an_alarm_timeout(
    broker: MemoryBroker,
) -> None:
    """As on RabbitMQ: publishes wait while the alarm lasts, the publisher says why."""
    link = Link(f"memory://{broker.name}", name="t")
    publisher = Publisher(link, timeout=0.05)
    await publisher.publish("", "q", b"warm-up", mandatory=False)  # opens the channel
    broker.block("low on memory")
    with pytest.raises(PublishTimeout, match="blocked the connection"):
        await publisher.publish("", "q", b"x", mandatory=False)
    broker.unblock()
    await publisher.publish("", "q", b"y", mandatory=False)
    await link.close()


async def test_a_connection_opened_during_an_alarm_is_blocked(broker: MemoryBroker) -> None:
    broker.block()
    connection = await connect(f"memory://{broker.name}")
    assert is_blocked(connection)
    broker.unblock()
    assert not is_blocked(connection)


def test_channel_gone_is_one_set_of_exceptions() -> None:
    import aiormq

    for exc in (
        aiormq.exceptions.ChannelInvalidStateError("closed"),
        aiormq.exceptions.ConnectionClosed(320, "shutdown"),
        ConnectionResetError(),
    ):
        assert isinstance(exc, CONNECTION_LOST)
