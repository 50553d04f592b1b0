"""``delivery="at_most_once"`` handlers on the real broker (DESIGN.md §8): acked on
arrival, a failure is ``dropped`` (never retried, never dead-lettered), prefetch bounds
the runs, and a ``kill -9`` loses at most the runs in flight."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from rabbitflow import App, Message, Outcome
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.helpers import message_count, queue_info, wait_for
from tests.integration.observability.scrape import free_port, sample, scrape
from tests.integration.worker.procs import publish_ids, started_consuming

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
queues:
  work:
    retry: {max_retries: 3, backoff: fixed, delay: 50ms}
"""


def make_app(amqp_url: str, **settings: Any) -> tuple[App, list[Outcome]]:
    app = App(load_text(TOPOLOGY), settings=Settings(url=amqp_url, **settings))
    seen: list[Outcome] = []

    @app.on_settled
    async def record(message: Message, outcome: Outcome) -> None:
        seen.append(outcome)

    return app, seen


async def test_failures_are_dropped_never_retried_or_dead_lettered(
    amqp_url: str, channel: Any
) -> None:
    port = free_port()
    app, seen = make_app(amqp_url, metrics_port=port)
    calls: list[int] = []

    @app.handler("work", delivery="at_most_once")
    async def handle(body: dict[str, int]) -> None:
        calls.append(body["id"])
        if body["id"] % 2:
            raise RuntimeError(f"boom {body['id']}")

    async with app:
        for i in range(6):
            await app.publish("", "work", {"id": i})
        await wait_for(lambda: len(seen) == 6, timeout=10)
        await asyncio.sleep(0.5)  # 10 retry delays: a retry would have come back by now
        s = scrape(port)
    assert sorted(calls) == list(range(6))  # each ran once: nothing came back
    kinds = sorted(o.kind for o in seen)
    assert kinds == ["ack"] * 3 + ["dropped"] * 3
    dropped = [o for o in seen if o.kind == "dropped"]
    assert {o.error for o in dropped} == {
        "RuntimeError: boom 1",
        "RuntimeError: boom 3",
        "RuntimeError: boom 5",
    }
    assert all(o.destination is None and o.attempt == 1 for o in dropped)
    assert sample(s, "rabbitflow_messages_total", queue="work", outcome="dropped") == 3
    assert sample(s, "rabbitflow_messages_total", queue="work", outcome="ack") == 3
    assert not sample(s, "rabbitflow_messages_total", queue="work", outcome="retry")
    for queue in ("work", "work.dlq", "work.retry.50ms"):
        assert await message_count(channel, queue) == 0, queue


async def test_acked_on_arrival_the_broker_holds_nothing_unacked_while_handlers_run(
    amqp_url: str, vhost: str, channel: Any
) -> None:
    app, seen = make_app(amqp_url)
    running: list[int] = []
    release = asyncio.Event()

    @app.handler("work", prefetch=5, delivery="at_most_once")
    async def handle(body: dict[str, int]) -> None:
        running.append(body["id"])
        await release.wait()

    async with app:
        for i in range(3):
            await app.publish("", "work", {"id": i})
        await wait_for(lambda: len(running) == 3, timeout=10)

        # The management API's counts lag; wait for them to settle on the truth.
        def nothing_unacked() -> bool:
            q = queue_info(vhost, "work")
            return q.get("messages_unacknowledged") == 0 and q.get("messages") == 0

        await wait_for(nothing_unacked, timeout=20, interval=0.25, message="0 unacked")
        assert await message_count(channel, "work") == 0
        assert seen == []  # the handlers are still running
        release.set()
        await wait_for(lambda: len(seen) == 3, timeout=10)
    assert [o.kind for o in seen] == ["ack"] * 3


async def test_prefetch_still_bounds_the_runs_at_once(amqp_url: str) -> None:
    app, seen = make_app(amqp_url)
    running = 0
    most = 0
    release = asyncio.Event()

    @app.handler("work", prefetch=2, delivery="at_most_once")
    async def handle(body: dict[str, int]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    async with app:
        for i in range(8):
            await app.publish("", "work", {"id": i})
        await wait_for(lambda: running == 2, timeout=10)
        await asyncio.sleep(0.5)
        assert running == 2  # the others wait (unacked) for a slot
        release.set()
        await wait_for(lambda: len(seen) == 8, timeout=10)
    assert most == 2
    assert [o.kind for o in seen] == ["ack"] * 8


async def test_graceful_stop_lets_running_handlers_finish(amqp_url: str, channel: Any) -> None:
    app, seen = make_app(amqp_url)
    started: list[int] = []
    finished: list[int] = []

    @app.handler("work", prefetch=3, delivery="at_most_once")
    async def handle(body: dict[str, int]) -> None:
        started.append(body["id"])
        await asyncio.sleep(0.3)
        finished.append(body["id"])

    await app.start()
    try:
        for i in range(10):
            await app.publish("", "work", {"id": i})
        await wait_for(lambda: len(started) >= 3, timeout=10)
    finally:
        await app.stop()
    assert sorted(finished) == sorted(started)  # every run that started finished
    assert all(o.kind == "ack" for o in seen)
    # What was not handled is back in the queue, nothing lost.
    assert len(finished) + await message_count(channel, "work") == 10


async def test_kill_9_loses_at_most_the_runs_in_flight(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    prefetch = 4
    total = 40
    w = worker(HANDLER_DELIVERY="at_most_once", HANDLER_PREFETCH=str(prefetch), HANDLER_SLEEP="0.2")
    w.start()
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(total))
    await wait_for(lambda: sum(w.done().values()) >= 8, timeout=20, message="8 done")
    w.process.kill()
    w.process.wait(timeout=10)
    done = {int(i) for i in w.done()}
    started = {int(i) for i in w.started()}
    deadline = time.monotonic() + 10
    remaining: set[int] = set()
    q = await channel.get_queue("jobs", ensure=False)
    while time.monotonic() < deadline and len(remaining) < total - len(started):
        m = await q.get(fail=False, no_ack=True)
        if m is None:
            await asyncio.sleep(0.1)
            continue
        remaining.add(json.loads(m.body)["id"])
    lost = set(range(total)) - done - remaining
    print(f"kill -9, at-most-once, prefetch {prefetch}: done {len(done)}, lost {len(lost)}")
    assert not done & remaining  # an acked message never comes back
    assert lost <= started - done  # only runs that were in flight are lost
    assert len(lost) <= prefetch
    assert await message_count(channel, "jobs") == 0
