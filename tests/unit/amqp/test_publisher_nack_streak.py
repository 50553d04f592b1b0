"""A channel that nacks every publish is replaced (no sockets: fake channels)."""

from __future__ import annotations

import asyncio
from typing import Any

from rabbitflow.amqp.connection import Link
from rabbitflow.amqp.publish import NACKS_BEFORE_NEW_CHANNEL, Publisher


class FakeChannel:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_streak_of_nacks_drops_the_channel() -> None:
    publisher = Publisher(Link("amqp://h/", name="t"))
    raw: Any = object()
    channel = FakeChannel()
    publisher._raw, publisher._channel = raw, channel  # type: ignore[assignment]
    for _ in range(NACKS_BEFORE_NEW_CHANNEL - 1):
        publisher._nacked(raw)
    assert publisher._raw is raw
    publisher._nacked(raw)
    assert publisher._raw is None
    await asyncio.wait_for(asyncio.gather(*list(publisher._closing)), 1)
    assert channel.closed


async def test_nacks_from_an_old_channel_do_not_drop_the_new_one() -> None:
    publisher = Publisher(Link("amqp://h/", name="t"))
    old: Any = object()
    publisher._raw = object()  # type: ignore[assignment]
    for _ in range(NACKS_BEFORE_NEW_CHANNEL * 2):
        publisher._nacked(old)
    assert publisher._raw is not None
