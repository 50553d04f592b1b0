"""Stream handlers' pure parts (DESIGN.md §9): the options checked at registration, the
``x-stream-offset`` argument each spec becomes, and the cursor that stores a position
before it acks (no broker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rabbitflow import App, HandlerError, MemoryOffsets, Retry, Router
from rabbitflow.topology import load_text
from rabbitflow.topology.schema import RetryPolicy
from rabbitflow.worker.handler import DEFAULT_STREAM_RETRY, start_argument, stream_options
from rabbitflow.worker.runtime import default_prefetch, routes_for
from rabbitflow.worker.stream import StreamCursor, StreamRoute

TOPOLOGY = load_text("version: 1\nqueues:\n  events: {type: stream}\n  work: {}\n")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def handler(event: dict[str, Any]) -> None: ...


@pytest.mark.parametrize(
    ("offset", "argument"),
    [
        ("first", "first"),
        ("last", "last"),
        ("next", "next"),
        (42, 42),
        (NOW, NOW),
        (NOW.replace(tzinfo=None), NOW),
        ("1h", NOW - timedelta(hours=1)),
        (timedelta(minutes=5), NOW - timedelta(minutes=5)),
    ],
)
def test_each_offset_spec_becomes_its_consumer_argument(offset: Any, argument: Any) -> None:
    options = stream_options(handler, offset=offset, consumer_name=None, offsets=None, retry=None)
    assert options is not None
    assert start_argument(options.offset, NOW) == argument


@pytest.mark.parametrize("offset", [-1, True, "yesterday", "10", 1.5, timedelta(0), "0s"])
def test_a_bad_offset_is_refused_naming_what_it_takes(offset: Any) -> None:
    with pytest.raises(HandlerError, match="offset"):
        stream_options(handler, offset=offset, consumer_name=None, offsets=None, retry=None)


def test_retry_takes_a_policy_or_a_mapping_and_defaults_to_three_from_one_second() -> None:
    def options(retry: Any) -> Any:
        return stream_options(
            handler, offset="first", consumer_name=None, offsets=None, retry=retry
        )

    assert options(None).retry == DEFAULT_STREAM_RETRY
    assert DEFAULT_STREAM_RETRY.schedule == (1000, 2000, 4000)
    assert options({"max_retries": 1, "delay": "50ms"}).retry.schedule == (50,)
    assert options(RetryPolicy(max_retries=0)).retry.max_retries == 0
    assert options(Retry(max_retries=2, delay="5ms")).retry.schedule == (5, 10)
    with pytest.raises(HandlerError, match="invalid retry"):
        options({"max_retries": -1})
    with pytest.raises(HandlerError, match="retry must be"):
        options(3)


def test_no_stream_options_means_none_and_bad_names_or_stores_are_refused() -> None:
    assert (
        stream_options(handler, offset=None, consumer_name=None, offsets=None, retry=None) is None
    )
    with pytest.raises(HandlerError, match="consumer_name"):
        stream_options(handler, offset=None, consumer_name=" ", offsets=None, retry=None)
    with pytest.raises(HandlerError, match="offset store"):
        stream_options(handler, offset=None, consumer_name="a", offsets=object(), retry=None)  # type: ignore[arg-type]  # a wrong store on purpose


def test_a_stream_route_names_its_dlq_and_defaults_the_consumer_name_and_prefetch() -> None:
    router = Router()

    @router.handler("events", consumer_name="status-v1", offset="first")
    async def project(event: dict[str, Any]) -> None: ...

    @router.handler("work")
    async def work(body: dict[str, Any]) -> None: ...

    (route,) = routes_for(TOPOLOGY, "events", router.handlers["events"])
    assert route.stream is not None
    assert route.stream.dead_letter_queue == "events.status-v1.dlq"
    assert route.stream.offset == "first"
    assert default_prefetch(TOPOLOGY, router.handlers["events"], 32) == 100
    (plain,) = routes_for(TOPOLOGY, "work", router.handlers["work"])
    assert plain.stream is None

    app = App(TOPOLOGY)

    @app.handler("events")
    async def audit(event: dict[str, Any]) -> None: ...

    (default,) = routes_for(TOPOLOGY, "events", app.handlers["events"])
    assert default.stream is not None
    assert default.stream.consumer_name == "audit"
    assert default.stream.offset == "next"


def test_stream_handlers_refuse_what_a_stream_cannot_do() -> None:
    app = App(TOPOLOGY)
    with pytest.raises(HandlerError, match="'work' is a classic queue"):

        @app.handler("work", consumer_name="x")
        async def work(body: dict[str, Any]) -> None: ...

    with pytest.raises(HandlerError, match="does not combine"):

        @app.handler("events", offset="first", delivery="at_most_once")
        async def fast(body: dict[str, Any]) -> None: ...


class FakeChannel:
    is_closed = False

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.acks.append((tag, multiple))


class SlowStore(MemoryOffsets):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []
        self.gate = asyncio.Event()

    async def store(self, consumer_name: str, stream: str, offset: int) -> None:
        await self.gate.wait()
        self.writes.append(offset)
        await super().store(consumer_name, stream, offset)


async def _turns() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_cursor_acks_only_what_is_stored_and_never_passes_a_running_event() -> None:
    channel, store = FakeChannel(), SlowStore()
    route = StreamRoute("events", "c", "events.c.dlq", DEFAULT_STREAM_RETRY, offsets=store)
    cursor = StreamCursor(channel, route, None, log=None)
    for offset, tag in ((10, 1), (11, 2), (12, 3)):
        assert cursor.begin(offset, tag)
    cursor.settle(11)  # 10 still running: nothing may be stored
    cursor.settle(10)
    await _turns()
    assert channel.acks == []  # not acked before the store wrote it
    store.gate.set()
    await _turns()
    assert store.writes == [11]
    assert channel.acks == [(2, True)]
    assert not cursor.begin(11, 4)  # at or below the position: not run again
    cursor.settle(12)
    await cursor.close()
    assert store.writes == [11, 12]
    assert channel.acks == [(2, True), (4, True)]  # 4 rode with 3's multiple ack
