"""Stream handlers on the real broker (DESIGN.md §9): every ``offset=`` spec, stream
order over 10,000 events, stored positions across a graceful stop (none re-delivered)
and a ``kill -9`` (none skipped, re-delivered at most the prefetch), two consumer names
each seeing every event, and a failing event retried in the worker then put in
``<stream>.<consumer_name>.dlq`` with its error while the projection goes on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from rabbitflow import App, HandlerError, MemoryOffsets, Message, Outcome, SQLiteOffsets
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.helpers import close_connections, drain, message_count, wait_for
from tests.integration.worker.procs import worker  # noqa: F401 - a fixture

pytestmark = pytest.mark.broker

TOPOLOGY = """\
version: 1
queues:
  events:
    type: stream
    max_age: 1d
  work: {}
"""
FAST = {"max_retries": 2, "backoff": "fixed", "delay": "20ms"}


class Event(BaseModel):
    id: int


def make_app(amqp_url: str) -> App:
    return App(load_text(TOPOLOGY), settings=Settings(url=amqp_url, shutdown_timeout=5))


async def append(amqp_url: str, ids: range) -> None:
    """Publish events to the stream (declared first by an app), confirmed."""
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            (Outgoing("", "events", {"id": i}, message_id=str(i)) for i in ids), window=1000
        )
    assert result.ok, result


async def declared(amqp_url: str) -> None:
    app = make_app(amqp_url)
    async with app:
        pass


async def seen_from(amqp_url: str, offset: Any, expect: int, **options: Any) -> list[int]:
    """Run a handler with ``offset`` until it saw ``expect`` events; their ids."""
    app = make_app(amqp_url)
    got: list[int] = []

    @app.handler("events", offset=offset, **options)
    async def project(event: Event) -> None:
        got.append(event.id)

    async with app:
        await wait_for(lambda: len(got) >= expect, timeout=20, message=f"{expect} events")
        await asyncio.sleep(0.2)  # nothing more comes
    return got


async def test_each_offset_spec_starts_where_it_says(amqp_url: str) -> None:
    await declared(amqp_url)
    await append(amqp_url, range(10))
    assert await seen_from(amqp_url, "first", 10) == list(range(10))
    assert await seen_from(amqp_url, 4, 6) == list(range(4, 10))
    # "last": the last chunk (the broker attaches at its first event); here one publish
    # window, so it ends with the last event.
    last = await seen_from(amqp_url, "last", 1)
    assert last and last[-1] == 9

    # "next": only what is appended after attaching.
    app = make_app(amqp_url)
    got: list[int] = []

    @app.handler("events", offset="next")
    async def project(event: Event) -> None:
        got.append(event.id)

    async with app:
        await asyncio.sleep(0.3)
        await append(amqp_url, range(10, 13))
        await wait_for(lambda: len(got) >= 3, timeout=20)
    assert got == [10, 11, 12]

    # A duration and a time: the broker resolves them by chunk (one-second resolution),
    # so the last batch is written 6.3 s after the one before; the durations run first,
    # each attaching within 5 s of that write.
    await asyncio.sleep(5.2)
    moment = datetime.now(UTC)
    await asyncio.sleep(1.1)
    await append(amqp_url, range(13, 16))
    assert await seen_from(amqp_url, "5s", 3) == [13, 14, 15]
    assert await seen_from(amqp_url, timedelta(seconds=5), 3) == [13, 14, 15]
    assert await seen_from(amqp_url, moment, 3) == [13, 14, 15]
    assert await seen_from(amqp_url, moment.replace(tzinfo=None), 3) == [13, 14, 15]


async def test_ten_thousand_events_in_stream_order_with_their_offsets(amqp_url: str) -> None:
    await declared(amqp_url)
    total = 10_000
    await append(amqp_url, range(total))
    app = make_app(amqp_url)
    got: list[tuple[int, int | None]] = []
    store = MemoryOffsets()

    @app.handler("events", offset="first", consumer_name="order", offsets=store)
    async def project(event: Event, message: Message) -> None:
        got.append((event.id, message.stream_offset))

    started = time.perf_counter()
    async with app:
        await wait_for(lambda: len(got) >= total, timeout=120, interval=0.1)
        elapsed = time.perf_counter() - started
        await wait_for(lambda: store._positions.get(("order", "events")) == total - 1, timeout=10)
    assert [i for i, _ in got] == list(range(total))
    assert [o for _, o in got] == list(range(total))  # offsets from 0 on a fresh stream
    print(f"10,000 stream events in order: {elapsed:.1f} s ({total / elapsed:.0f}/s)")


async def run_until(amqp_url: str, path: Path, count: int) -> tuple[list[int], int | None]:
    """One worker run with a SQLite store, stopped gracefully after ``count`` events;
    what it handled and the position stored."""
    store = SQLiteOffsets(path)
    app = make_app(amqp_url)
    got: list[int] = []

    @app.handler("events", offset="first", consumer_name="v1", offsets=store, prefetch=20)
    async def project(event: Event) -> None:
        got.append(event.id)
        await asyncio.sleep(0.001)

    async with app:
        await wait_for(lambda: len(got) >= count, timeout=30)
    position = await store.load("v1", "events")
    await store.close()
    return got, position


async def test_a_graceful_stop_resumes_right_after_the_last_settled_event(
    amqp_url: str, tmp_path: Path
) -> None:
    """The stored position wins over offset= on restart; nothing is re-delivered."""
    await declared(amqp_url)
    await append(amqp_url, range(300))
    path = tmp_path / "offsets.db"
    first, position = await run_until(amqp_url, path, 100)
    assert position == first[-1]  # the last settled event is stored
    await append(amqp_url, range(300, 310))
    second, position = await run_until(amqp_url, path, 100)
    assert position == second[-1]
    assert second[0] == first[-1] + 1  # none re-delivered, none skipped
    assert first + second == list(range(len(first) + len(second)))


async def test_two_consumer_names_each_see_every_event(amqp_url: str) -> None:
    await declared(amqp_url)
    await append(amqp_url, range(200))
    store = MemoryOffsets()
    apps = [make_app(amqp_url), make_app(amqp_url)]
    got: dict[str, list[int]] = {"status": [], "audit": []}
    for app, name in zip(apps, got, strict=True):

        def register(app: App, name: str) -> None:
            @app.handler("events", offset="first", consumer_name=name, offsets=store)
            async def project(event: Event) -> None:
                got[name].append(event.id)

        register(app, name)
    async with apps[0], apps[1]:
        await wait_for(lambda: all(len(v) >= 200 for v in got.values()), timeout=30)
        await wait_for(lambda: len(store._positions) == 2, timeout=10)
    assert got["status"] == got["audit"] == list(range(200))
    assert await store.positions("events") == {"status": 199, "audit": 199}


async def test_a_failing_event_is_retried_then_dead_lettered_and_the_projection_goes_on(
    amqp_url: str, channel: Any
) -> None:
    await declared(amqp_url)
    await append(amqp_url, range(6))
    app = make_app(amqp_url)
    calls: list[tuple[int, int]] = []
    done: list[int] = []
    outcomes: list[tuple[int | None, Outcome]] = []
    store = MemoryOffsets()

    @app.on_settled
    async def record(message: Message, outcome: Outcome) -> None:
        outcomes.append((message.stream_offset, outcome))

    @app.handler("events", offset="first", consumer_name="status", offsets=store, retry=FAST)
    async def project(event: Event, message: Message) -> None:
        calls.append((event.id, message.attempt))
        if event.id == 2:
            raise ValueError("order 2 is broken")
        done.append(event.id)

    async with app:
        await wait_for(lambda: len(done) == 5, timeout=20)
        await wait_for(lambda: store._positions.get(("status", "events")) == 5, timeout=10)
    assert done == [0, 1, 3, 4, 5]  # in order, past the failure
    assert [a for i, a in calls if i == 2] == [1, 2, 3]  # 2 retries in the worker
    kinds = [(o, out.kind) for o, out in outcomes if o == 2]
    assert kinds == [(2, "retry"), (2, "retry"), (2, "dead_letter")]
    dead = next(out for _, out in outcomes if out.kind == "dead_letter")
    assert dead.destination == "events.status.dlq"
    assert dead.error == "ValueError: order 2 is broken"
    assert await message_count(channel, "events.status.dlq") == 1
    (letter,) = await drain(channel, "events.status.dlq", 1)
    headers = letter.headers
    assert headers["x-rabbitflow-error"] == "ValueError: order 2 is broken"
    assert headers["x-rabbitflow-queue"] == "events"
    assert headers["x-rabbitflow-attempt"] == 3
    assert headers["x-rabbitflow-stream-offset"] == 2
    assert headers["x-rabbitflow-consumer-name"] == "status"
    assert "x-rabbitflow-traceback" in headers
    assert "x-stream-offset" not in headers
    assert letter.message_id == "2"


def test_stream_options_on_a_queue_that_is_not_a_stream_are_refused(amqp_url: str) -> None:
    app = make_app(amqp_url)
    with pytest.raises(HandlerError, match="'work' is a classic queue"):

        @app.handler("work", offset="first")
        async def handle(event: Event) -> None: ...


async def test_kill_9_mid_stream_skips_none_and_re_delivers_at_most_the_prefetch(
    worker: Any,  # noqa: F811 - the fixture
    amqp_url: str,
    tmp_path: Path,
) -> None:
    """A ledger worker on the stream (SQLite positions, prefetch 50) is killed with
    SIGKILL mid-run; after a restart every event is handled, in stream order within each
    run, and the events handled twice are at most the prefetch."""
    total, prefetch = 3000, 50
    await declared(amqp_url)
    await append(amqp_url, range(total))
    w = worker(
        TOPOLOGY,
        QUEUE="events",
        STREAM_OFFSETS=f"sqlite:{tmp_path / 'offsets.db'}",
        HANDLER_PREFETCH=str(prefetch),
        HANDLER_SLEEP="0.001",
    )
    w.start()
    await wait_for(lambda: len(w.done()) >= 500, timeout=60, interval=0.02)
    assert w.process is not None
    w.process.kill()
    w.process.wait()
    before = len(w.done())
    w.start()
    await wait_for(lambda: len(w.done()) == total, timeout=90, interval=0.2, message="all")
    assert w.stop() == 0
    done = w.done()
    duplicates = sum(n - 1 for n in done.values())
    assert set(done) == {str(i) for i in range(total)}  # skipped: 0
    assert duplicates <= prefetch, duplicates
    for pid in {p[3] for p in w.lines()}:
        run = [int(p[0]) for p in w.lines() if p[3] == pid and p[4] == "start"]
        assert run == sorted(run) == list(range(run[0], run[0] + len(run)))  # stream order
    assert all(p[0] == p[5] for p in w.lines())  # id == offset on a fresh stream
    print(
        f"kill -9 mid-stream after {before} handled: skipped 0, re-delivered {duplicates} "
        f"(bound {prefetch})"
    )


def rabbitflow(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RABBITFLOW_URL": amqp_url},
        timeout=60,
        check=False,
    )


async def test_dlq_list_replay_purge_handle_a_stream_consumers_dead_letters(
    amqp_url: str, tmp_path: Path, channel: Any
) -> None:
    """``dlq replay`` appends the event to the stream for that consumer alone: it runs
    again there (attempt 1), another consumer passes over it."""
    await declared(amqp_url)
    await append(amqp_url, range(4))
    store = MemoryOffsets()
    broken = {2}
    status: list[tuple[int, int]] = []

    def status_app() -> App:
        app = make_app(amqp_url)

        @app.handler("events", offset="first", consumer_name="status", offsets=store, retry=FAST)
        async def project(event: Event, message: Message) -> None:
            if event.id in broken:
                raise ValueError(f"order {event.id} is broken")
            status.append((event.id, message.attempt))

        return app

    async with status_app():
        await wait_for(lambda: store._positions.get(("status", "events")) == 3, timeout=20)
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    listed = rabbitflow(
        amqp_url, "dlq", "list", "events.status", "--json", "--topology", str(topology)
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["queue"] == "events"
    assert row["error"] == "ValueError: order 2 is broken"
    assert row["message_id"] == "2"

    broken.clear()  # fixed: replay it
    replayed = rabbitflow(amqp_url, "dlq", "replay", "events.status")
    assert replayed.returncode == 0, replayed.stderr
    assert "moved 1 dead letter from events.status.dlq" in replayed.stdout
    audit: list[int] = []
    other = make_app(amqp_url)

    @other.handler("events", offset="first", consumer_name="audit", offsets=store)
    async def record(event: Event) -> None:
        audit.append(event.id)

    async with status_app(), other:
        await wait_for(lambda: (2, 1) in status, timeout=20)
        await wait_for(lambda: store._positions.get(("audit", "events")) == 4, timeout=20)
    assert status == [(0, 1), (1, 1), (3, 1), (2, 1)]
    assert audit == [0, 1, 2, 3]  # the replayed copy (offset 4) is not audit's
    assert await message_count(channel, "events.status.dlq") == 0
    purged = rabbitflow(amqp_url, "dlq", "purge", "events.status", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "purged 0 dead letters from events.status.dlq" in purged.stdout


async def test_a_lost_connection_resumes_after_the_last_settled_event(
    amqp_url: str, vhost: str
) -> None:
    """The worker reconnects and attaches right after the position it holds in memory:
    none skipped, re-run at most the events in flight (the prefetch, and the one running)."""
    total, prefetch = 400, 20
    await declared(amqp_url)
    await append(amqp_url, range(total))
    app = make_app(amqp_url)
    got: list[int] = []

    @app.handler("events", offset="first", consumer_name="c", prefetch=prefetch)
    async def project(event: Event) -> None:
        got.append(event.id)
        await asyncio.sleep(0.002)

    async with app:
        await wait_for(lambda: len(got) >= 100, timeout=30)
        await wait_for(lambda: close_connections(vhost) > 0, timeout=10)
        await wait_for(lambda: set(got) == set(range(total)), timeout=60, message="all")
    again = len(got) - len(set(got))
    assert again <= prefetch + 1, again
    print(f"connection closed after {100}+ events: all {total} handled, {again} re-run")
