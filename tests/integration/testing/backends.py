"""The two backends of the contract suite, driven through the same small API: a real
RabbitMQ in a fresh vhost, and the in-memory broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection
from pamqp.commands import Basic

from rabbitflow.amqp.connection import connect
from rabbitflow.testing.memory import MemoryBroker, register, unregister
from rabbitflow.testing.plugin import DEFAULT_MANAGEMENT_URL, DEFAULT_URL
from rabbitflow.testing.vhost import temporary_vhost


@dataclass(frozen=True)
class Got:
    """What a consumer observes of one message."""

    body: str
    routing_key: str
    exchange: str
    redelivered: bool
    headers: Mapping[str, Any]


def normalize(value: Any) -> Any:
    """Headers as comparable data: text as str, timestamps replaced by a marker."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, datetime):
        return "<time>"
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


class Backend:
    """One broker under test."""

    def __init__(
        self, kind: str, url: str, connection: AbstractConnection, broker: MemoryBroker | None
    ) -> None:
        self.kind = kind
        self.url = url
        self.connection = connection
        self.broker = broker
        self._raw: Any = None

    async def raw(self, *, confirms: bool = True) -> Any:
        channel = await self.connection.channel(
            publisher_confirms=confirms, on_return_raises=confirms
        )
        return await channel.get_underlay_channel()

    async def ch(self) -> Any:
        if self._raw is None or self._raw.is_closed:
            self._raw = await self.raw()
        return self._raw

    async def exchange(self, name: str, type: str = "direct", **arguments: Any) -> None:
        await (await self.ch()).exchange_declare(
            name, exchange_type=type, durable=False, auto_delete=False, arguments=arguments
        )

    async def queue(self, name: str, **arguments: Any) -> None:
        await (await self.ch()).queue_declare(name, durable=False, arguments=arguments)

    async def bind(self, queue: str, exchange: str, key: str = "", **arguments: Any) -> None:
        await (await self.ch()).queue_bind(queue, exchange, routing_key=key, arguments=arguments)

    async def bind_exchange(self, destination: str, source: str, key: str = "") -> None:
        await (await self.ch()).exchange_bind(destination, source, routing_key=key)

    async def publish(
        self,
        exchange: str,
        key: str,
        body: str,
        *,
        headers: dict[str, Any] | None = None,
        expiration: str | None = None,
        mandatory: bool = False,
    ) -> str:
        """Publish with confirms; returns ``ack``, ``nack`` or ``returned``."""
        props = Basic.Properties(headers=headers, expiration=expiration)
        try:
            result = await (await self.ch()).basic_publish(
                body.encode(),
                exchange=exchange,
                routing_key=key,
                properties=props,
                mandatory=mandatory,
            )
        except aiormq.exceptions.PublishError:
            return "returned"
        except aiormq.exceptions.DeliveryError:
            return "nack"
        return "nack" if isinstance(result, Basic.Nack) else "ack"

    async def get_all(self, queue: str) -> list[Got]:
        """Take every ready message of a queue (acked), oldest first."""
        channel = await self.ch()
        out = []
        while True:
            got = await channel.basic_get(queue, no_ack=True)
            if not isinstance(got.delivery, Basic.GetOk):
                return out
            out.append(
                Got(
                    got.body.decode(),
                    got.delivery.routing_key or "",
                    got.delivery.exchange,
                    bool(got.delivery.redelivered),
                    normalize(got.header.properties.headers or {}),
                )
            )

    async def bodies(self, queue: str) -> list[str]:
        return [g.body for g in await self.get_all(queue)]

    async def depth(self, queue: str) -> int:
        ok = await (await self.ch()).queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def sleep(self, seconds: float) -> None:
        """Let time pass: real time on RabbitMQ, the virtual clock in memory."""
        if self.broker is not None:
            self.broker.advance(seconds)
            for _ in range(5):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    async def wait_depth(self, queue: str, count: int, *, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.depth(queue) < count:
            assert time.monotonic() < deadline, f"{queue} never reached {count} messages"
            await self.sleep(0.02)


@contextlib.asynccontextmanager
async def open_backend(kind: str) -> AsyncIterator[Backend]:
    if kind == "memory":
        broker = register(MemoryBroker(f"contract-{time.monotonic_ns()}"))
        url = f"memory://{broker.name}"
        connection = await connect(url)
        try:
            yield Backend(kind, url, connection, broker)
        finally:
            await connection.close()
            unregister(broker)
        return
    with temporary_vhost(DEFAULT_URL, DEFAULT_MANAGEMENT_URL, prefix="rf-contract") as vhost:
        connection = await connect(vhost.url)
        try:
            yield Backend(kind, vhost.url, connection, None)
        finally:
            await connection.close()
