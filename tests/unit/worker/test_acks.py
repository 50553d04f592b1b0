"""`Acker` acks only the finished prefix of deliveries, with one multiple=True frame."""

from __future__ import annotations

import asyncio
from typing import Any

from rabbitflow.worker.acks import Acker


class Channel:
    """Records the acks an Acker sends."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.is_closed = False

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.acks.append((tag, multiple))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_finished_run_is_acked_with_one_frame() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None)
    for tag in (1, 2, 3):
        acker.delivered(tag)
    for tag in (1, 2, 3):
        acker.ack(tag)
    await settle()
    assert channel.acks == [(3, True)]


async def test_an_unfinished_delivery_is_never_covered() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None)
    for tag in (1, 2, 3, 4):
        acker.delivered(tag)
    acker.ack(1)
    acker.ack(3)  # 2 is still running
    acker.ack(4)
    await settle()
    assert channel.acks == [(1, True)]
    acker.ack(2)
    await settle()
    assert channel.acks == [(1, True), (4, True)]


async def test_nacked_deliveries_end_the_run_without_an_ack_of_their_own() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None)
    for tag in (1, 2):
        acker.delivered(tag)
    acker.settled(1)
    await settle()
    assert channel.acks == []
    acker.ack(2)
    await settle()
    assert channel.acks == [(2, True)]


async def test_closed_channel_sends_nothing() -> None:
    channel: Any = Channel()
    channel.is_closed = True
    dropped: list[BaseException] = []
    acker = Acker(channel, dropped.append)
    acker.delivered(1)
    acker.delivered(2)
    acker.ack(2)
    acker.ack(1)
    await settle()
    assert channel.acks == []
    assert len(dropped) == 1  # reported, so the worker logs the late ack


async def test_at_prefetch_1_a_lone_delivery_is_acked_by_its_caller_at_once() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None, immediate=True)
    acker.delivered(1)
    assert acker.ack(1) is True  # nothing to coalesce with: no loop turn of delay
    await settle()
    assert channel.acks == []  # the caller sends it
    acker.delivered(2)
    acker.delivered(3)
    assert acker.ack(3) is False
    assert acker.ack(2) is False
    await settle()
    assert channel.acks == [(3, True)]


async def test_with_hold_one_frame_waits_for_enough_finished_deliveries() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None, hold=4, max_hold=60)
    for tag in range(1, 9):
        acker.delivered(tag)
    for tag in (1, 2, 3):
        acker.ack(tag)
    await settle()
    assert channel.acks == []  # three finished: held
    acker.ack(4)
    acker.settled(5)  # a nack counts towards the hold, and is not acked
    await settle()
    assert channel.acks == [(4, True)]


async def test_a_held_ack_is_sent_within_max_hold() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None, hold=100, max_hold=0.01)
    acker.delivered(1)
    acker.ack(1)
    await settle()
    assert channel.acks == []
    await asyncio.sleep(0.05)  # the loop runs timers in order: max_hold's comes first
    await settle()
    assert channel.acks == [(1, True)]


async def test_flush_sends_what_is_held_at_once() -> None:
    channel = Channel()
    acker = Acker(channel, lambda exc: None, hold=100, max_hold=60)
    for tag in (1, 2, 3):
        acker.delivered(tag)
    acker.ack(1)
    acker.ack(2)
    await settle()
    acker.flush()
    await settle()
    assert channel.acks == [(2, True)]  # 3 is still running: never covered
