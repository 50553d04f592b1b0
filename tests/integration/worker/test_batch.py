"""Batch handlers on the real broker (DESIGN.md §8): handed over at ``max_size`` or
``max_wait``, partial failure through the retry path, a body that does not decode
dead-lettered alone, the partial batch flushed at shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from rabbitflow import App, Batch, BatchFailure, Message, Outcome, Producer, Reject
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.topology import load_text
from rabbitflow.worker.pipeline import CallNext
from tests.helpers import drain, message_count, wait_for
from tests.integration.worker.procs import publish_ids, started_consuming

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
queues:
  events:
    retry: {max_retries: 2, backoff: fixed, delay: 50ms}
"""


class Event(BaseModel):
    id: int


def make_app(amqp_url: str) -> tuple[App, list[tuple[int, Outcome]]]:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    seen: list[tuple[int, Outcome]] = []

    @app.on_settled
    async def record(message: Message, outcome: Outcome) -> None:
        seen.append((message.attempt, outcome))

    return app, seen


async def publish(app: App, ids: range | list[int]) -> None:
    async with Producer(app.settings.url) as producer:
        result = await producer.publish_many(Outgoing("", "events", {"id": i}) for i in ids)
    assert result.ok


async def test_batches_are_handed_over_at_max_size_with_one_middleware_run_each(
    amqp_url: str,
) -> None:
    app, seen = make_app(amqp_url)
    batches: list[list[int]] = []
    firsts: list[str | None] = []
    heads: list[str | None] = []

    @app.middleware
    async def once(message: Message, call_next: CallNext) -> Any:
        firsts.append(message.message_id)
        return await call_next(message)

    @app.handler("events", batch=Batch(max_size=5, max_wait="30s"))
    async def ingest(events: list[Event], messages: list[Message]) -> None:
        # Message objects come in the same order as the bodies.
        assert [e.id for e in events] == [json.loads(m.body)["id"] for m in messages]
        heads.append(messages[0].message_id)
        batches.append([e.id for e in events])

    async with app:
        start = time.monotonic()
        await publish(app, range(10))
        await wait_for(lambda: len(seen) == 10, timeout=10)
        took = time.monotonic() - start
    assert took < 10  # handed over full, long before max_wait
    assert batches == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert len(firsts) == 2  # the middleware ran once per batch, with its first message
    assert firsts == heads
    assert [o.kind for _, o in seen] == ["ack"] * 10


async def test_a_partial_batch_is_handed_over_max_wait_after_its_first_message(
    amqp_url: str,
) -> None:
    app, seen = make_app(amqp_url)
    handed: list[tuple[float, list[int]]] = []

    @app.handler("events", batch=Batch(max_size=100, max_wait="400ms"))
    async def ingest(events: list[Event]) -> None:
        handed.append((time.monotonic(), [e.id for e in events]))

    async with app:
        start = time.monotonic()
        await publish(app, range(3))
        await wait_for(lambda: len(seen) == 3, timeout=10)
    [(at, ids)] = handed
    assert ids == [0, 1, 2]
    assert 0.35 <= at - start < 1.4, at - start


async def test_batch_failure_sends_the_listed_messages_down_the_failure_path_alone(
    amqp_url: str, channel: Any
) -> None:
    app, seen = make_app(amqp_url)
    runs: list[list[tuple[int, int]]] = []

    @app.handler("events", batch=Batch(max_size=4, max_wait="100ms"))
    async def ingest(events: list[Event], messages: list[Message]) -> None:
        runs.append([(e.id, m.attempt) for e, m in zip(events, messages, strict=True)])
        failures: dict[int, BaseException] = {}
        for i, (e, m) in enumerate(zip(events, messages, strict=True)):
            if e.id == 1 and m.attempt == 1:
                failures[i] = RuntimeError("row refused once")
            if e.id == 2:
                failures[i] = Reject("poison row")
        if failures:
            raise BatchFailure(failures)

    async with app:
        await publish(app, range(4))
        await wait_for(lambda: len(seen) == 5, timeout=10)
    assert runs[0] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert runs[1:] == [[(1, 2)]]  # only the retried one came back
    kinds = sorted((a, o.kind) for a, o in seen)
    assert kinds == [(1, "ack"), (1, "ack"), (1, "dead_letter"), (1, "retry"), (2, "ack")]
    [dead] = await drain(channel, "events.dlq")
    assert dead.headers["x-rabbitflow-error"] == "Reject: poison row"
    assert await message_count(channel, "events") == 0


async def test_any_other_exception_fails_every_message_of_the_batch(
    amqp_url: str, channel: Any
) -> None:
    app, seen = make_app(amqp_url)

    @app.handler("events", batch=Batch(max_size=3, max_wait="100ms"), retry_on=())
    async def ingest(events: list[Event]) -> None:
        raise RuntimeError("warehouse down")

    async with app:
        await publish(app, range(3))
        await wait_for(lambda: len(seen) == 3, timeout=10)
    assert [o.kind for _, o in seen] == ["dead_letter"] * 3
    assert len(await drain(channel, "events.dlq")) == 3


async def test_a_body_that_does_not_decode_is_dead_lettered_alone_and_left_out(
    amqp_url: str, channel: Any
) -> None:
    app, seen = make_app(amqp_url)
    batches: list[list[int]] = []

    @app.handler("events", batch=Batch(max_size=3, max_wait="2s"))
    async def ingest(events: list[Event]) -> None:
        batches.append([e.id for e in events])

    async with app:
        await app.publish("", "events", {"id": 1})
        await app.publish("", "events", {"id": "not a number"})
        await app.publish("", "events", {"id": 3})
        await wait_for(lambda: len(seen) == 3, timeout=10)
    assert batches == [[1, 3]]
    assert sorted(o.kind for _, o in seen) == ["ack", "ack", "dead_letter"]
    [dead] = await drain(channel, "events.dlq")
    assert "id" in dead.headers["x-rabbitflow-error"]
    assert dead.headers["x-rabbitflow-error"].startswith("BodyDecodeError")


async def test_a_partial_batch_is_flushed_at_shutdown(amqp_url: str, channel: Any) -> None:
    app, seen = make_app(amqp_url)
    batches: list[list[int]] = []

    @app.handler("events", batch=Batch(max_size=100, max_wait="60s"))
    async def ingest(events: list[Event]) -> None:
        await asyncio.sleep(0.1)
        batches.append([e.id for e in events])

    await app.start()
    try:
        await publish(app, range(3))
        consumer = app.worker.consumers[0]  # type: ignore[union-attr]
        await wait_for(lambda: consumer.in_flight == 3, timeout=10)
        assert batches == []  # held: neither full nor max_wait old
    finally:
        await app.stop()
    assert batches == [[0, 1, 2]]
    assert [o.kind for _, o in seen] == ["ack"] * 3
    assert await message_count(channel, "events") == 0


async def test_the_timeout_applies_to_the_whole_batch_run(amqp_url: str, channel: Any) -> None:
    app, seen = make_app(amqp_url)

    # max_wait far above the publishing time: the three always make one batch, even when a
    # loaded machine spreads their arrival over more than a second.
    @app.handler("events", batch=Batch(max_size=3, max_wait="20s"), timeout=0.3, retry_on=())
    async def ingest(events: list[Event]) -> None:
        await asyncio.sleep(0.2 * len(events))  # 0.6 s for the batch: over its 0.3 s

    async with app:
        await publish(app, range(3))
        await wait_for(lambda: len(seen) == 3, timeout=10)
    assert [o.kind for _, o in seen] == ["dead_letter"] * 3
    assert {o.error for _, o in seen} == {"HandlerTimeout: batch exceeded its 0.3s timeout"}


async def test_a_sync_batch_handler_runs_in_the_thread_pool(amqp_url: str) -> None:
    app, seen = make_app(amqp_url)
    batches: list[list[int]] = []

    @app.handler("events", batch=Batch(max_size=2, max_wait="5s"))
    def ingest(events: list[Event]) -> None:
        batches.append([e.id for e in events])

    async with app:
        await publish(app, range(4))
        await wait_for(lambda: len(seen) == 4, timeout=10)
    assert batches == [[0, 1], [2, 3]]


async def test_kill_9_mid_batch_loses_nothing_and_duplicates_at_most_the_prefetch(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    """A ledger worker with batches of 20 (prefetch 40) is killed mid-run: after a
    restart every message is handled, duplicates bounded by the prefetch."""
    total, size = 1000, 20
    prefetch = 2 * size
    w = worker(HANDLER_BATCH=str(size), HANDLER_SLEEP="0.02")
    w.start()
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(total))
    await wait_for(lambda: len(w.done()) >= 200, timeout=30, interval=0.05)
    assert w.process is not None
    w.process.kill()
    w.process.wait()
    before = len(w.done())  # the kill may land after the last batch on a loaded machine
    w.start()
    await started_consuming(vhost)
    await wait_for(lambda: len(w.done()) == total, timeout=60, interval=0.2, message="all handled")
    assert w.stop() == 0
    done = w.done()
    duplicates = sum(n - 1 for n in done.values())
    assert set(done) == {str(i) for i in range(total)}  # lost: 0
    assert duplicates <= prefetch, duplicates
    print(
        f"kill -9 mid-batch (size {size}) after {before} handled: lost 0, "
        f"duplicates {duplicates} (bound {prefetch})"
    )
    assert await message_count(channel, "jobs") == 0
