"""Connections of the in-memory broker, and the aio-pika-level channel that hands out a
`RawChannel`: what `rabbitflow.amqp.connection.connect` returns for ``memory://``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

from yarl import URL

from rabbitflow.testing.memory.broker import MemoryBroker
from rabbitflow.testing.memory.channel import Callbacks, RawChannel


class MemoryChannel:
    """The aio-pika-level channel: hands out its `RawChannel`, declares, closes."""

    def __init__(self, raw: RawChannel) -> None:
        self._raw = raw
        self.close_callbacks = Callbacks()

    @property
    def is_closed(self) -> bool:
        return self._raw.is_closed

    async def get_underlay_channel(self) -> RawChannel:
        return self._raw

    async def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        await self._raw.exchange_declare(
            name,
            str(getattr(type, "value", type)),
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
        )
        return _Named(name)

    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        ok = await self._raw.queue_declare(
            name or "",
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
        )
        return _Named(ok.queue or "", ok)

    async def close(self, exc: BaseException | None = None) -> None:
        if not self._raw.is_closed:
            await self._raw.close()
            self.close_callbacks(self, exc)


@dataclass
class _Named:
    name: str
    declaration_result: Any = None


class MemoryConnection:
    """A connection to a `MemoryBroker`; ``close_callbacks`` fire when it closes.

    Answers `rabbitflow.amqp.transport.ConnectionState` like the aiormq adapter does, so
    a broker alarm (`MemoryBroker.block`) is seen by the publisher as on RabbitMQ.
    """

    def __init__(self, broker: MemoryBroker, url: str) -> None:
        self.broker = broker
        self.url = URL(url)
        self.is_closed = False
        self.close_callbacks = Callbacks()
        self.channels: set[RawChannel] = set()
        self._numbers = itertools.count(1)
        self.unblocked = asyncio.Event()
        """Clear while the broker blocks this connection: publishes wait on it."""
        self.unblocked.set()
        if broker.blocked_reason is not None:
            self.unblocked.clear()
        broker.connected(self)

    @property
    def is_usable(self) -> bool:
        return not self.is_closed

    @property
    def is_blocked(self) -> bool:
        return not self.unblocked.is_set()

    async def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
        **_: Any,
    ) -> MemoryChannel:
        if self.is_closed:
            raise RuntimeError("connection closed")
        raw = RawChannel(
            self,
            channel_number or next(self._numbers),
            confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )
        self.channels.add(raw)
        return MemoryChannel(raw)

    def lose(self, exc: BaseException | None = None) -> None:
        """Close as a lost network connection does: channels die, unacked messages are
        requeued, exclusive queues are deleted, close callbacks fire."""
        if self.is_closed:
            return
        for raw in list(self.channels):
            raw._close_now()
        self.is_closed = True
        for name, queue in list(self.broker.queues.items()):
            if queue.exclusive and queue.owner is self:
                self.broker.delete_queue(name)
        with contextlib.suppress(ValueError):
            self.broker.connections.remove(self)
        self.close_callbacks(self, exc)

    async def close(self, exc: BaseException | None = None) -> None:
        self.lose(exc)
