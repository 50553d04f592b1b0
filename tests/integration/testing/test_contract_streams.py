"""The stream contract (DESIGN.md §9): a ``type: stream`` queue read with every
``x-stream-offset`` spec, on RabbitMQ and on the in-memory broker alike, and a stream
handler run on both. Events are published one confirmed publish at a time, so each is a
chunk of its own on RabbitMQ (where ``last`` starts at the last chunk)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiormq
import pytest
from pydantic import BaseModel

from rabbitflow import App, MemoryOffsets, Message
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.helpers import wait_for
from tests.integration.testing.backends import Backend, open_backend

pytestmark = pytest.mark.broker


@pytest.fixture(params=["rabbitmq", "memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with open_backend(request.param) as b:
        yield b


async def stream(backend: Backend, name: str = "log", events: int = 5) -> None:
    ch = await backend.ch()
    await ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    for i in range(events):
        assert await backend.publish("", name, f"e{i}") == "ack"


async def read(backend: Backend, spec: Any, count: int, name: str = "log") -> list[tuple[int, str]]:
    """(offset, body) of the first ``count`` events a consumer at ``spec`` gets (a short
    wait for more), acked as they come."""
    ch = await backend.raw(confirms=False)
    await ch.basic_qos(prefetch_count=10)
    got: list[tuple[int, str]] = []

    async def take(message: Any) -> None:
        got.append((message.header.properties.headers["x-stream-offset"], message.body.decode()))
        await ch.basic_ack(message.delivery.delivery_tag)

    await ch.basic_consume(name, take, arguments={"x-stream-offset": spec})
    for _ in range(200):
        if len(got) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    await ch.close()
    return got


async def test_every_offset_spec_reads_the_same_events(backend: Backend) -> None:
    await stream(backend)
    everything = [(i, f"e{i}") for i in range(5)]
    assert await read(backend, "first", 5) == everything
    assert await read(backend, 3, 2) == everything[3:]
    assert await read(backend, "last", 1) == everything[4:]
    assert await read(backend, 99, 0) == []
    assert await read(backend, datetime(2000, 1, 1, tzinfo=UTC), 5) == everything
    assert await read(backend, "first", 5) == everything  # reading removed nothing


async def test_next_reads_only_what_comes_after(backend: Backend) -> None:
    await stream(backend)
    ch = await backend.raw(confirms=False)
    await ch.basic_qos(prefetch_count=10)
    got: list[str] = []

    async def take(message: Any) -> None:
        got.append(message.body.decode())
        await ch.basic_ack(message.delivery.delivery_tag)

    await ch.basic_consume("log", take, arguments={"x-stream-offset": "next"})
    await asyncio.sleep(0.2)
    assert await backend.publish("", "log", "late") == "ack"
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.02)
    assert got == ["late"]


async def test_a_stream_consumer_needs_a_prefetch(backend: Backend) -> None:
    await stream(backend, events=0)
    ch = await backend.raw(confirms=False)

    async def take(message: Any) -> None: ...

    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await ch.basic_consume("log", take)


class Event(BaseModel):
    n: int


async def run_once(
    backend: Backend, topology: Any, store: MemoryOffsets, batch: range
) -> list[tuple[int, int | None]]:
    app = App(topology, settings=Settings(url=backend.url))
    got: list[tuple[int, int | None]] = []

    @app.handler("log", offset="first", consumer_name="c", offsets=store)
    async def project(event: Event, message: Message) -> None:
        got.append((event.n, message.stream_offset))

    async with app:
        for n in batch:
            await app.publish("", "log", {"n": n})
        await wait_for(lambda: len(got) >= 3, timeout=20)
        await wait_for(lambda: store._positions.get(("c", "log")) == batch[-1], timeout=10)
    return got


async def test_a_stream_handler_resumes_after_its_stored_position(backend: Backend) -> None:
    topology = load_text("version: 1\nqueues:\n  log: {type: stream}\n")
    store = MemoryOffsets()
    runs: list[list[tuple[int, int | None]]] = []
    for batch in (range(0, 3), range(3, 6)):
        runs.append(await run_once(backend, topology, store, batch))
    assert runs == [[(0, 0), (1, 1), (2, 2)], [(3, 3), (4, 4), (5, 5)]]
