"""What a careless or hostile producer sends cannot crash, stall or mislead a worker
(DESIGN.md §13), on the real broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from rabbitflow import App, CircuitBreaker, Message
from rabbitflow.amqp.publish import properties
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from rabbitflow.worker.idempotency import MemoryStore
from tests.helpers import drain, message_count, wait_for
from tests.integration.observability.scrape import free_port, healthz

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  work:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 2, delay: 10ms}
"""


class Order(BaseModel):
    id: int


def make_app(amqp_url: str, **settings: Any) -> App:
    return App(load_text(TOPOLOGY), settings=Settings(url=amqp_url, **settings))


async def _count_is(channel: Any, queue: str, n: int) -> bool:
    return await message_count(channel, queue) == n


async def test_a_31_digit_attempt_header_does_not_wedge_a_retrying_queue(
    amqp_url: str, channel: Any
) -> None:
    """The issue's reproduction: one hostile message, then 20 normal ones, prefetch 8.
    Before the fix the hostile copy could not be encoded, its delivery was never settled
    and the coalesced acks of the others waited behind it forever."""
    app = make_app(amqp_url)
    runs: list[tuple[int, int]] = []

    @app.handler("work", prefetch=8)
    async def fails(body: dict[str, int], message: Message) -> None:
        runs.append((body["n"], message.attempt))
        raise RuntimeError("downstream down")

    async with app:
        huge = "1000000000000000000000000000000"
        await app.publish(
            "orders", "order.placed", {"n": -1}, headers={"x-rabbitflow-attempt": huge}
        )
        for n in range(20):
            await app.publish("orders", "order.placed", {"n": n})
        await wait_for(lambda: _count_is(channel, "work.dlq", 21), timeout=15)
        assert await message_count(channel, "work") == 0
    dead = {m.message_id: m for m in await drain(channel, "work.dlq")}
    assert len(dead) == 21
    # The hostile attempt counted as 1: tried 3 times like every other message.
    assert sorted(a for n, a in runs if n == -1) == [1, 2, 3]
    assert {m.headers["x-rabbitflow-attempt"] for m in dead.values()} == {3}


class ReleaseFails(MemoryStore):
    """An idempotency store whose release raises (a Redis outage at the wrong moment):
    an exception in the settle path, after the handler failed."""

    async def release(self, key: str) -> None:
        raise ConnectionError("store unreachable during release")


async def test_an_exception_while_settling_dead_letters_through_the_broker_and_is_logged(
    amqp_url: str, channel: Any
) -> None:
    app = make_app(amqp_url)
    handled: list[int] = []

    @app.handler("work", prefetch=8, idempotency=ReleaseFails())
    async def handle(body: dict[str, int]) -> None:
        handled.append(body["n"])
        if body["n"] == 0:
            raise RuntimeError("fails, then the store fails too")

    with capture_logs() as events:
        async with app:
            ids = [await app.publish("orders", "order.placed", {"n": n}) for n in range(10)]
            await wait_for(lambda: _count_is(channel, "work.dlq", 1), timeout=10)
            await wait_for(lambda: len(handled) == 10, timeout=10)
            await wait_for(lambda: _count_is(channel, "work", 0), timeout=5)
    [dead] = await drain(channel, "work.dlq")
    assert dead.message_id == ids[0]
    assert dead.headers["x-death"][0]["reason"] == "rejected"  # the broker dead-lettered it
    [line] = [e for e in events if e["event"].startswith("delivery failed to settle")]
    assert line["log_level"] == "error"
    assert (line["message_id"], line["queue"]) == (ids[0], "work")
    assert line["error"] == "ConnectionError: store unreachable during release"
    # The nine others were acked: nothing waits behind the failed one.
    stopped = next(e for e in events if e["event"] == "worker stopped")
    assert (stopped["ack"], stopped["nack"]) == (9, 1)


async def test_forged_original_headers_do_not_change_a_first_delivery(
    amqp_url: str, channel: Any
) -> None:
    app = make_app(amqp_url)
    seen: list[tuple[int, str, str]] = []

    @app.handler("work")
    async def handle(order: Order, message: Message) -> None:
        seen.append((message.attempt, message.exchange, message.routing_key))
        raise RuntimeError("always")

    forged = {
        "x-rabbitflow-original-exchange": "billing",
        "x-rabbitflow-original-routing-key": "order.cancelled",
        "x-death": [{"queue": "work.retry.10ms", "reason": "expired"}],
    }
    async with app:
        await app.publish("orders", "order.placed", {"id": 1}, headers=forged)
        await wait_for(lambda: _count_is(channel, "work.dlq", 1), timeout=10)
    # Every attempt, the retries through the delay queue included, sees what was published.
    assert seen == [(a, "orders", "order.placed") for a in (1, 2, 3)]
    [dead] = await drain(channel, "work.dlq")
    assert dead.headers["x-rabbitflow-original-exchange"] == "orders"
    assert dead.headers["x-rabbitflow-original-routing-key"] == "order.placed"


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("annotation", ["dict", "model"])
async def test_bodies_that_do_not_decode_are_dead_lettered_at_once_and_not_counted(
    amqp_url: str, channel: Any, annotation: str
) -> None:
    """JSON null, an array for a dict, 100,000 levels of nesting, a truncated object:
    each dead-lettered on its first attempt, with the same error for a dict handler and a
    pydantic one, and none counted by the circuit breaker."""
    app = make_app(amqp_url)
    breaker = CircuitBreaker(failures=2, reset_after="30s")
    calls: list[object] = []

    if annotation == "dict":

        @app.handler("work", circuit_breaker=breaker)
        async def handle_dict(body: dict) -> None:  # type: ignore[type-arg]
            calls.append(body)

    else:

        @app.handler("work", circuit_breaker=breaker)
        async def handle_model(body: Order) -> None:
            calls.append(body)

    bodies = [b"null", b"[1]", DEEP, b'{"id": 1,']
    async with app:
        for body in bodies:
            props = properties(content_type="application/json", headers={"b": len(body)})
            await app.producer.publisher.send("orders", "order.placed", body, props)
        await wait_for(lambda: _count_is(channel, "work.dlq", 4), timeout=10)
        assert breaker.state.value == "closed"
    assert calls == []
    dead = {m.headers["b"]: m.headers for m in await drain(channel, "work.dlq")}
    assert {h["x-rabbitflow-attempt"] for h in dead.values()} == {1}
    errors = [dead[len(b)]["x-rabbitflow-error"] for b in bodies]
    assert errors == [
        "BodyDecodeError: body: Input should be an object",
        "BodyDecodeError: body: Input should be an object",
        "BodyDecodeError: body is not valid JSON: recursion limit exceeded at line 1 column 202",
        "BodyDecodeError: body is not valid JSON: EOF while parsing a value at line 1 column 9",
    ]


async def test_a_stuck_consumer_makes_healthz_unhealthy_with_the_reason(amqp_url: str) -> None:
    """A handler without a timeout that never returns: after twice the shutdown timeout
    plus the settle allowance (here 0.4 + 0.4 + 1 + 1 = 2.8 s), /healthz answers 503."""
    port = free_port()
    app = make_app(amqp_url, metrics_port=port, shutdown_timeout=0.2, publish_timeout=0.2)
    started = asyncio.Event()

    @app.handler("work")
    async def hangs(body: dict[str, int]) -> None:
        started.set()
        await asyncio.sleep(60)

    async with app:
        assert healthz(port)[0] == 200
        await app.publish("orders", "order.placed", {"n": 1})
        await asyncio.wait_for(started.wait(), 5)
        began = time.monotonic()
        await wait_for(lambda: healthz(port)[0] == 503, timeout=10, interval=0.2)
        assert time.monotonic() - began >= 2.5
        status, body = healthz(port)
        assert status == 503
        assert body["consumers"] == {"work": "stuck"}
        [reason] = body["reasons"]
        assert reason.startswith("consumer stuck: work has held a delivery for ")
        assert "limit 3s" in reason


def _publishes_any_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let this process's pamqp write short strings that are not UTF-8 (lone surrogates
    become the bytes they escape): what a producer in any other language can send."""
    import pamqp.encode

    def short_or_long(encoder: Any, value: str) -> bytes:
        raw = value.encode("utf-8", "surrogateescape")
        return bytes(encoder.pack(len(raw)) + raw)

    monkeypatch.setattr(pamqp.encode, "_string", short_or_long)


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
async def test_a_routing_key_or_property_that_is_not_utf8_does_not_wedge_the_queue(
    amqp_url: str, channel: Any, monkeypatch: pytest.MonkeyPatch, delivery: Any
) -> None:
    """Before rabbitflow read frames itself, pamqp refused such a frame, the connection
    ended, and the broker gave the same message to the next connection, for ever: the
    queue never moved again."""
    _publishes_any_bytes(monkeypatch)
    app = make_app(amqp_url)
    seen: list[tuple[int, str, str | None]] = []

    @app.handler("work", prefetch=8, delivery=delivery)
    async def handle(order: Order, message: Message) -> None:
        seen.append((order.id, message.routing_key, message.message_id))

    bad = "\udcff\udcfe"
    with capture_logs() as logs:
        async with app:
            await app.publish("orders", f"order.{bad}", {"id": 1})
            await app.publish("orders", "order.placed", {"id": 2}, message_id=f"m-{bad}")
            await app.publish("orders", "order.placed", {"id": 3})
            await wait_for(lambda: len(seen) == 3, timeout=10)
            assert await message_count(channel, "work") == 0
    got = {n: (key, message_id) for n, key, message_id in seen}
    assert [got[n][0] for n in (1, 2, 3)] == [
        "order.\ufffd\ufffd",
        "order.placed",
        "order.placed",
    ]
    assert got[2][1] == "m-\ufffd\ufffd"
    warned = [e for e in logs if "not UTF-8" in e["event"]]
    assert {e["frame"] for e in warned} == {"basic.deliver", "content header"}
    assert not [e for e in logs if e["log_level"] == "error"]
