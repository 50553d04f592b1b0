"""Queue depths by passive declare: exact, cheap, and needing no management plugin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from rabbitflow.amqp.transport import CONNECTION_LOST


class DepthProbe:
    """Reads ready-message counts over a channel of its own on a given connection.

    A passive declare of a missing queue closes the channel (NOT_FOUND); the probe then
    reports None for that queue and opens a fresh channel for the next one.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._channel: AbstractChannel | None = None
        self._connection: AbstractConnection | None = None

    async def depths(
        self, connection: AbstractConnection, queues: Sequence[str]
    ) -> dict[str, int | None]:
        """Ready messages per queue; None for a queue that does not exist (or when the
        connection went away mid-poll)."""
        out: dict[str, int | None] = {}
        for queue in queues:
            out[queue] = await self._one(connection, queue)
        return out

    async def _one(self, connection: AbstractConnection, queue: str) -> int | None:
        try:
            raw = await self._raw(connection)
            ok = await asyncio.wait_for(raw.queue_declare(queue, passive=True), self.timeout)
        except CONNECTION_LOST:
            return None
        except TimeoutError:
            return None
        return int(ok.message_count or 0)

    async def _raw(self, connection: AbstractConnection) -> aiormq.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed or self._connection is not connection:
            self._connection = connection
            self._channel = await connection.channel(publisher_confirms=False)
        return await self._channel.get_underlay_channel()

    async def close(self) -> None:
        """Close the probe's channel."""
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_LOST):
                await channel.close()
