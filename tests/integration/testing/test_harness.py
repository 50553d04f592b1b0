"""The harness on the in-memory broker: what it records, how it waits, and the App's
behaviour on the fake where the contract suite does not go (lost connections,
auto-advance, sync handlers, timeouts)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rabbitflow import App, Message
from rabbitflow.errors import HandlerTimeout, WaitTimeout
from rabbitflow.testing import MemoryBroker, run_app
from rabbitflow.testing.memory import register, unregister
from rabbitflow.topology.loader import load_text

TOPOLOGY = """
version: 1
exchanges:
  jobs: {type: direct}
queues:
  work:
    bind: [{exchange: jobs, routing_key: work}]
    retry: {max_retries: 1, delays: [30s]}
  idle:
    bind: [{exchange: jobs, routing_key: idle}]
"""


async def test_sync_handler_runs_are_recorded_with_their_message(memory_url: str) -> None:
    app = App(load_text(TOPOLOGY))

    @app.handler("work")
    def work(body: str, message: Message) -> str:
        return body.upper()

    async with run_app(app, memory_url) as h:
        await h.publish("jobs", "work", "hello", headers={"tenant": "a"})
        await h.wait_idle()
    (call,) = h.calls_of("work")
    assert (call.body, call.outcome, call.error) == ("hello", "ack", None)
    assert (call.message.headers["tenant"], call.message.attempt) == ("a", 1)
    assert not call.message.redelivered


async def test_async_timeout_is_recorded_as_handler_timeout_and_retried(memory_url: str) -> None:
    app = App(load_text(TOPOLOGY))

    @app.handler("work", timeout=0.05)
    async def work(body: Any, message: Message) -> None:
        if message.attempt == 1:
            await asyncio.sleep(10)

    async with run_app(app, memory_url) as h:
        await h.publish("jobs", "work", {"n": 1})
        await h.wait_idle()
    first, second = h.calls_of("work")
    assert isinstance(first.error, HandlerTimeout)
    assert (first.outcome, second.outcome, second.attempt) == ("retry", "ack", 2)


async def test_wait_until_gives_up_with_wait_timeout(memory_url: str) -> None:
    app = App(load_text(TOPOLOGY))

    @app.handler("work")
    async def work(body: Any) -> None:
        pass

    async with run_app(app, memory_url) as h:
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            await h.wait_until(lambda: False, timeout=0.2)
        assert time.monotonic() - started < 5  # the 0.2 s timeout, not a hang


async def test_a_lost_connection_redelivers_unacked_messages(
    memory_broker: MemoryBroker, memory_url: str
) -> None:
    app = App(load_text(TOPOLOGY))
    release = asyncio.Event()

    @app.handler("work")
    async def work(body: Any, message: Message) -> None:
        if not message.redelivered:
            await release.wait()

    async with run_app(app, memory_url) as h:
        await h.publish("jobs", "work", {"n": 1})
        await h.wait_for_calls("work", 1)
        worker_connection = next(
            c for c in memory_broker.connections if c is h.app.worker.connection
        )  # type: ignore[union-attr]
        worker_connection.lose(ConnectionError("network"))
        await h.wait_until(lambda: any(c.message.redelivered for c in h.calls_of("work")))
        release.set()
        await h.wait_idle()
    assert [c.message.redelivered for c in h.calls_of("work")][-1] is True


async def test_auto_advance_moves_the_clock_without_a_harness() -> None:
    """An App on ``memory://`` used directly: with auto_advance the 30 s retry delay
    passes as soon as nothing else can happen."""
    broker = register(MemoryBroker("auto-advance-test", start=0.0, auto_advance=True))
    try:
        app = App(load_text(TOPOLOGY), url="memory://auto-advance-test")
        seen: list[int] = []

        @app.handler("work")
        async def work(body: Any, message: Message) -> None:
            seen.append(message.attempt)
            if message.attempt == 1:
                raise RuntimeError("once")

        async with app:
            await app.publish("jobs", "work", {"n": 1})
            for _ in range(2000):
                if seen == [1, 2]:
                    break
                await asyncio.sleep(0.001)
        assert seen == [1, 2]
        assert broker.now >= 30
    finally:
        unregister(broker)


PARTITIONED = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  ship:
    bind: [{exchange: orders, routing_key: "#"}]
    partitions: {count: 3, key: routing_key}
    retry: {max_retries: 1, delays: [5s]}
"""


async def test_partitioned_queue_keeps_key_order_and_shares_one_dlq(memory_url: str) -> None:
    app = App(load_text(PARTITIONED))

    @app.handler("ship")
    async def ship(body: dict[str, int], message: Message) -> None:
        if body["seq"] == 3:
            raise RuntimeError("never ships")

    async with run_app(app, memory_url) as h:
        for seq in range(4):
            for key in range(6):
                await h.publish("orders", f"key{key}", {"seq": seq})
        await h.wait_idle()
        dead = await h.dead_letters("ship")
    assert h.dead_letter_queues("ship") == ["ship.dlq"]
    assert len(dead) == 6
    first_tries = [c for c in h.calls_of("ship") if c.attempt == 1]
    by_key: dict[str, list[int]] = {}
    for call in first_tries:
        by_key.setdefault(call.message.routing_key, []).append(call.body["seq"])
    assert by_key == {f"key{k}": [0, 1, 2, 3] for k in range(6)}
