"""Every outcome of a delivery, end to end on the real broker (DESIGN.md §2)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from rabbitflow import App, HandlerError, Message, Reject
from rabbitflow.topology import load_text
from tests.helpers import drain, message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  work:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 3, backoff: linear, delay: 100ms}
  audit:                       # bound to the same exchange: must never see a retry
    bind: [{exchange: orders, routing_key: "order.*"}]
  plain:                       # no retry, no dead letters: failures are nacked
    bind: [{exchange: orders, routing_key: "plain.*"}]
  reject.only:
    dead_letter: true
    bind: [{exchange: orders, routing_key: "reject.*"}]
"""


class Order(BaseModel):
    id: int
    amount: float = 1.0


def make_app(amqp_url: str) -> App:
    return App(load_text(TOPOLOGY), url=amqp_url)


async def test_success_acks_and_decodes_the_model(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)
    got: list[tuple[Order, Message]] = []

    @app.handler("work")
    async def handle(order: Order, message: Message) -> None:
        got.append((order, message))

    async with app:
        await app.publish(
            "orders", "order.placed", Order(id=7), headers={"tenant": "a"}, correlation_id="c-1"
        )
        await wait_for(lambda: len(got) == 1)
    order, message = got[0]
    assert order == Order(id=7)
    assert (message.queue, message.exchange, message.routing_key) == (
        "work",
        "orders",
        "order.placed",
    )
    assert message.attempt == 1
    assert message.redelivered is False
    assert message.headers == {"tenant": "a"}
    assert message.correlation_id == "c-1"
    assert message.content_type == "application/json"
    assert message.message_id
    assert await message_count(channel, "work") == 0
    assert await message_count(channel, "work.dlq") == 0


async def test_retries_follow_the_schedule_then_dead_letter(amqp_url: str, channel: Any) -> None:
    """Attempts are numbered 1..max_retries+1, each after its delay (within +250 ms),
    and the dead letter carries the error headers."""
    app = make_app(amqp_url)
    attempts: list[tuple[int, float, str]] = []

    @app.handler("work")
    async def always_fails(order: Order, message: Message) -> None:
        attempts.append((message.attempt, time.monotonic(), message.routing_key))
        raise RuntimeError(f"downstream down for {order.id}")

    async with app:
        await drain(channel, "audit")
        await app.publish("orders", "order.placed", {"id": 1})
        await wait_for(lambda: len(attempts) == 4, timeout=5)
        await wait_for(lambda: message_count(channel, "work.dlq"), timeout=5)

    assert [a for a, _, _ in attempts] == [1, 2, 3, 4]
    assert {rk for _, _, rk in attempts} == {"order.placed"}
    gaps = [attempts[i + 1][1] - attempts[i][1] for i in range(3)]
    for gap, expected in zip(gaps, (0.1, 0.2, 0.3), strict=True):
        assert expected - 0.02 <= gap <= expected + 0.25, gaps
    [dead] = await drain(channel, "work.dlq")
    h = dead.headers
    assert h["x-rabbitflow-attempt"] == 4
    assert h["x-rabbitflow-queue"] == "work"
    assert h["x-rabbitflow-error"] == "RuntimeError: downstream down for 1"
    assert "Traceback" in h["x-rabbitflow-traceback"]
    assert len(h["x-rabbitflow-traceback"]) <= 8192
    assert h["x-rabbitflow-original-exchange"] == "orders"
    assert h["x-rabbitflow-original-routing-key"] == "order.placed"
    assert h["x-rabbitflow-failed-at"].endswith("+00:00")
    assert "x-death" not in h
    # The retries went through work.retry.* and back to work only.
    assert len(await drain(channel, "audit")) == 1


async def test_transient_failure_succeeds_on_retry(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)
    attempts: list[int] = []

    @app.handler("work")
    async def flaky(order: Order, message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt < 3:
            raise ConnectionError("try again")

    async with app:
        await app.publish("orders", "order.placed", {"id": 2})
        await wait_for(lambda: attempts == [1, 2, 3], timeout=5)
        await asyncio.sleep(0.2)
    assert attempts == [1, 2, 3]
    assert await message_count(channel, "work.dlq") == 0
    assert await message_count(channel, "work") == 0


async def test_reject_and_bad_bodies_dead_letter_at_once(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)
    calls: list[int] = []

    @app.handler("work")
    async def strict(order: Order) -> None:
        calls.append(order.id)
        if order.amount <= 0:
            raise Reject("amount must be positive")

    async with app:
        await app.publish("orders", "order.placed", {"id": 3, "amount": -1})
        await app.publish("orders", "order.placed", {"id": "not a number"})
        await app.publish("orders", "order.placed", b"\x80\x04pickle", headers={"k": "v"})
        await wait_for(lambda: message_count(channel, "work.dlq"), timeout=5)
        await wait_for(lambda: _count_is(channel, "work.dlq", 3), timeout=5)
    assert calls == [3]
    dead = {
        m.headers["x-rabbitflow-error"].split(":")[0]: m for m in await drain(channel, "work.dlq")
    }
    assert set(dead) == {"Reject", "BodyDecodeError"} or len(dead) == 2
    errors = sorted(m.headers["x-rabbitflow-error"] for m in dead.values())
    assert errors[-1] == "Reject: amount must be positive"
    for m in dead.values():
        assert m.headers["x-rabbitflow-attempt"] == 1


async def _count_is(channel: Any, queue: str, n: int) -> bool:
    return await message_count(channel, queue) == n


async def test_pickle_is_never_deserialized(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)
    calls: list[object] = []

    @app.handler("work")
    async def handle(body: dict[str, Any]) -> None:
        calls.append(body)

    async with app:
        await app.producer.publisher.send(
            "orders", "order.placed", b"\x80\x04\x95", _props("application/x-python-pickle")
        )
        await wait_for(lambda: _count_is(channel, "work.dlq", 1), timeout=5)
    assert calls == []
    [dead] = await drain(channel, "work.dlq")
    assert (
        "content type 'application/x-python-pickle' is not decoded"
        in dead.headers["x-rabbitflow-error"]
    )


def _props(content_type: str) -> Any:
    from rabbitflow.amqp.publish import properties

    return properties(content_type=content_type)


async def test_queue_without_dead_letters_nacks_without_requeue(
    amqp_url: str, channel: Any
) -> None:
    app = make_app(amqp_url)
    calls: list[int] = []

    @app.handler("plain")
    async def fails(body: dict[str, Any]) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    async with app:
        await app.publish("orders", "plain.x", {"n": 1})
        await wait_for(lambda: calls == [1], timeout=5)
        await asyncio.sleep(0.3)
    assert calls == [1]  # not requeued in a loop
    assert await message_count(channel, "plain") == 0


async def test_reject_on_queue_with_dead_letters_but_no_retry(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)

    @app.handler("reject.only")
    async def fails(body: dict[str, Any]) -> None:
        raise RuntimeError("no retry policy")

    async with app:
        await app.publish("orders", "reject.x", {"n": 1})
        await wait_for(lambda: _count_is(channel, "reject.only.dlq", 1), timeout=5)
    [dead] = await drain(channel, "reject.only.dlq")
    assert dead.headers["x-rabbitflow-attempt"] == 1


async def test_sync_handlers_run_in_threads_and_timeouts_fail(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)
    seen: list[int] = []

    @app.handler("work", prefetch=4, timeout=0.2)
    def slow(order: Order, message: Message) -> None:
        seen.append(message.attempt)
        if message.attempt == 1:
            time.sleep(0.4)  # overruns the timeout: counts as a failure

    async with app:
        loop_ticks = 0

        async def ticker() -> None:
            nonlocal loop_ticks
            while True:
                await asyncio.sleep(0.01)
                loop_ticks += 1

        tick = asyncio.create_task(ticker())
        await app.publish("orders", "order.placed", {"id": 5})
        await wait_for(lambda: seen == [1, 2], timeout=5)
        tick.cancel()
    assert loop_ticks > 10  # the event loop kept running while the thread slept
    assert await message_count(channel, "work.dlq") == 0


async def test_async_timeout_counts_as_failure(amqp_url: str, channel: Any) -> None:
    app = make_app(amqp_url)

    @app.handler("work", timeout="50ms")
    async def hangs(order: Order, message: Message) -> None:
        await asyncio.sleep(10)

    async with app:
        await app.publish("orders", "order.placed", {"id": 6})
        await wait_for(lambda: _count_is(channel, "work.dlq", 1), timeout=5)
    [dead] = await drain(channel, "work.dlq")
    assert (
        dead.headers["x-rabbitflow-error"] == "HandlerTimeout: handler exceeded its 0.05s timeout"
    )
    assert dead.headers["x-rabbitflow-attempt"] == 4


def test_handler_for_an_unknown_queue_is_refused_with_a_hint() -> None:
    app = App(load_text(TOPOLOGY))
    with pytest.raises(
        HandlerError, match=r"no queue 'wrok' in the topology \(did you mean 'work'\?\)"
    ):

        @app.handler("wrok")
        async def handle(body: bytes) -> None: ...


async def test_request_reply_returns_the_handler_result(amqp_url: str) -> None:
    app = make_app(amqp_url)

    @app.handler("work")
    async def price(order: Order) -> dict[str, float]:
        return {"total": order.amount * 2}

    async with app:
        replies = await asyncio.gather(
            *(
                app.request("orders", "order.quote", {"id": i, "amount": i}, timeout=10)
                for i in range(200)
            )
        )
    assert replies == [{"total": i * 2.0} for i in range(200)]
