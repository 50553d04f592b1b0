"""At-most-once and batch handlers on the in-memory broker: the same worker path as on
RabbitMQ (DESIGN.md §8)."""

from __future__ import annotations

from typing import Any

from rabbitflow import App, Batch, BatchFailure, MemoryOffsets
from rabbitflow.testing import run_app
from rabbitflow.topology.loader import load_text

TOPOLOGY = """
version: 1
queues:
  work:
    retry: {max_retries: 2, delays: [1s]}
"""


async def test_an_at_most_once_failure_is_dropped_not_retried(memory_url: str) -> None:
    app = App(load_text(TOPOLOGY))
    runs: list[int] = []

    @app.handler("work", delivery="at_most_once")
    async def work(body: Any) -> None:
        runs.append(body["n"])
        raise RuntimeError("fails")

    async with run_app(app, memory_url) as h:
        await h.publish("", "work", {"n": 1})
        await h.wait_idle()
        await h.advance(5)
        await h.wait_idle()
        dead = await h.dead_letters("work")
    assert runs == [1]
    assert [c.outcome for c in h.calls_of("work")] == ["dropped"]
    assert dead == []


async def test_a_batch_with_one_failure_retries_that_one_alone(memory_url: str) -> None:
    app = App(load_text(TOPOLOGY))
    batches: list[list[int]] = []

    @app.handler("work", batch=Batch(max_size=3, max_wait="50ms"))
    async def work(items: list[dict[str, int]]) -> None:
        batches.append([i["n"] for i in items])
        if len(items) == 3:
            raise BatchFailure({1: RuntimeError("row refused")})

    async with run_app(app, memory_url) as h:
        for n in range(3):
            await h.publish("", "work", {"n": n})
        await h.wait_idle()
        await h.advance(2)
        await h.wait_idle()
    assert batches == [[0, 1, 2], [1]]
    assert sorted(c.outcome for c in h.calls_of("work")) == ["ack", "ack", "ack", "retry"]


async def test_a_stream_handler_retries_then_dead_letters_and_wait_idle_sees_it_done(
    memory_url: str,
) -> None:
    """A stream keeps its events, so the harness is idle once none waits for a reader."""
    app = App(load_text("version: 1\nqueues:\n  log: {type: stream, max_age: 1h}\n"))
    seen: list[int] = []
    store = MemoryOffsets()

    @app.handler(
        "log",
        offset="first",
        consumer_name="c",
        offsets=store,
        retry={"max_retries": 1, "delay": "10ms"},
    )
    async def project(body: Any) -> None:
        if body["n"] == 1:
            raise ValueError("no")
        seen.append(body["n"])

    async with run_app(app, memory_url) as h:
        for n in range(3):
            await h.publish("", "log", {"n": n})
        await h.wait_idle()
        assert h.broker is not None
        dead = h.broker.messages("log.c.dlq")
    assert seen == [0, 2]
    assert [c.outcome for c in h.calls_of("log")] == ["ack", "retry", "dead_letter", "ack"]
    assert [m.properties.headers["x-rabbitflow-stream-offset"] for m in dead] == [1]
    assert await store.load("c", "log") == 2
