"""An in-memory RabbitMQ for tests, behind the same `App` (``url="memory://NAME"``).

Brokers live in a registry by name: ``memory://orders`` connects to the broker registered
as ``orders``, creating it on first use; `register` installs one made by a test (the
``memory_broker`` fixture does) and `unregister` forgets it.
"""

from __future__ import annotations

from typing import cast
from urllib.parse import urlsplit

from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.transport import register_scheme
from rabbitflow.testing.memory.broker import MemoryBroker, Stored
from rabbitflow.testing.memory.channel import RawChannel
from rabbitflow.testing.memory.connection import MemoryChannel, MemoryConnection

__all__ = [
    "MemoryBroker",
    "MemoryChannel",
    "MemoryConnection",
    "RawChannel",
    "Stored",
    "broker_for",
    "connect_memory",
    "register",
    "unregister",
]

_brokers: dict[str, MemoryBroker] = {}


def name_of(url: str) -> str:
    """The broker name of a ``memory://NAME`` URL (``default`` when empty)."""
    parts = urlsplit(url)
    return parts.netloc or parts.path.strip("/") or "default"


def register(broker: MemoryBroker) -> MemoryBroker:
    """Make ``memory://<broker.name>`` connect to this broker."""
    _brokers[broker.name] = broker
    return broker


def unregister(broker: MemoryBroker) -> None:
    """Forget a broker (its connections stay usable)."""
    if _brokers.get(broker.name) is broker:
        del _brokers[broker.name]


def broker_for(url: str) -> MemoryBroker:
    """The broker a ``memory://`` URL names, created on first use."""
    name = name_of(url)
    broker = _brokers.get(name)
    if broker is None:
        broker = register(MemoryBroker(name))
    return broker


async def connect_memory(url: str) -> AbstractConnection:
    """A new connection to the broker a ``memory://`` URL names.

    The opener of the ``memory`` transport: installed as the ``rabbitflow.transports``
    entry point ``memory`` and registered when this package is imported, so
    `rabbitflow.amqp.connection.connect` finds it without importing the testing package.
    """
    # MemoryConnection implements the part of AbstractConnection rabbitflow uses.
    return cast(AbstractConnection, MemoryConnection(broker_for(url), url))


register_scheme("memory", connect_memory)
