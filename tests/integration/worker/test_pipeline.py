"""The delivery pipeline of DESIGN.md §7 on the real broker: middleware order, a
middleware that rejects, what ``on_settled`` observers are told for every outcome, and
the retry filters' nearest-class rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from rabbitflow import App, HandlerError, Message, Outcome, Reject
from rabbitflow.topology import load_text
from rabbitflow.worker.pipeline import CallNext
from tests.helpers import drain, message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  work:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 2, backoff: fixed, delay: 50ms}
  plain:                          # no retry, no dead letters: failures are nacked
    dead_letter: false
    bind: [{exchange: orders, routing_key: "plain.*"}]
"""


def make_app(amqp_url: str) -> tuple[App, list[tuple[str, Outcome]]]:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    seen: list[tuple[str, Outcome]] = []

    @app.on_settled
    async def record(message: Message, outcome: Outcome) -> None:
        seen.append((message.queue, outcome))

    return app, seen


async def test_middlewares_run_outermost_first_around_the_handler(amqp_url: str) -> None:
    app, seen = make_app(amqp_url)
    trail: list[str] = []

    @app.middleware
    async def outer(message: Message, call_next: CallNext) -> Any:
        trail.append("outer in")
        try:
            return await call_next(message)
        finally:
            trail.append("outer out")

    @app.middleware
    async def inner(message: Message, call_next: CallNext) -> Any:
        trail.append(f"inner in {message.routing_key}")
        result = await call_next(message)
        trail.append(f"inner out {result}")
        return result

    @app.handler("work")
    def handle(body: dict[str, Any]) -> str:  # a sync handler, in the thread pool
        trail.append("handler")
        return "done"

    async with app:
        await app.publish("orders", "order.placed", {"id": 1})
        await wait_for(lambda: len(seen) == 1)
    assert trail == ["outer in", "inner in order.placed", "handler", "inner out done", "outer out"]
    assert seen[0][1].kind == "ack"


async def test_a_middleware_reject_dead_letters_without_running_the_handler(
    amqp_url: str, channel: Any
) -> None:
    app, seen = make_app(amqp_url)
    ran: list[int] = []

    @app.middleware
    async def gate(message: Message, call_next: CallNext) -> Any:
        if message.headers.get("tenant") == "blocked":
            raise Reject("tenant blocked")
        return await call_next(message)

    @app.handler("work")
    async def handle(body: dict[str, int]) -> None:
        ran.append(body["id"])

    async with app:
        await app.publish("orders", "order.placed", {"id": 1}, headers={"tenant": "blocked"})
        await app.publish("orders", "order.placed", {"id": 2})
        await wait_for(lambda: len(seen) == 2)
    assert ran == [2]
    kinds = sorted(o.kind for _, o in seen)
    assert kinds == ["ack", "dead_letter"]
    [dead] = await drain(channel, "work.dlq")
    assert dead.headers["x-rabbitflow-error"] == "Reject: tenant blocked"


async def test_on_settled_sees_ack_retry_with_its_delay_queue_and_dead_letter(
    amqp_url: str,
) -> None:
    app, seen = make_app(amqp_url)

    @app.handler("work")
    async def handle(body: dict[str, int], message: Message) -> None:
        if body["id"] == 1 and message.attempt == 1:
            raise TimeoutError("gateway slow")
        if body["id"] == 2:
            raise Reject("poison")

    async with app:
        await app.publish("orders", "order.placed", {"id": 1})
        await wait_for(lambda: len(seen) == 2, message="retry then ack")
        await app.publish("orders", "order.placed", {"id": 2})
        await wait_for(lambda: len(seen) == 3, message="dead letter")
    (_, retry), (_, again), (_, dead) = seen
    assert (retry.kind, retry.attempt, retry.delay) == ("retry", 1, 0.05)
    assert retry.destination == "work.retry.50ms"
    assert retry.error == "TimeoutError: gateway slow"
    assert isinstance(retry.exception, TimeoutError)
    assert retry.seconds is not None and retry.seconds >= 0
    assert (again.kind, again.attempt, again.error, again.destination) == ("ack", 2, None, None)
    assert (dead.kind, dead.attempt, dead.error) == ("dead_letter", 1, "Reject: poison")
    assert dead.destination == "work.dlx"


async def test_on_settled_sees_a_nack_on_a_queue_without_dead_letters(amqp_url: str) -> None:
    app, seen = make_app(amqp_url)

    @app.handler("plain")
    async def handle(body: dict[str, int]) -> None:
        raise ValueError("no")

    async with app:
        await app.publish("orders", "plain.x", {"id": 1})
        await wait_for(lambda: len(seen) == 1)
    [(queue, outcome)] = seen
    assert (queue, outcome.kind, outcome.error, outcome.destination) == (
        "plain",
        "nack",
        "ValueError: no",
        None,
    )


async def test_on_settled_sees_requeue_at_shutdown(amqp_url: str, channel: Any) -> None:
    app, seen = make_app(amqp_url)
    started = asyncio.Event()

    @app.handler("work")
    async def handle(body: dict[str, int]) -> None:
        started.set()
        await asyncio.sleep(30)

    await app.start()
    await app.publish("orders", "order.placed", {"id": 1})
    await asyncio.wait_for(started.wait(), 10)
    await app.stop(0.1)
    [(_, outcome)] = seen
    assert (outcome.kind, outcome.error, outcome.attempt) == ("requeue", None, 1)
    assert await message_count(channel, "work") == 1  # given back, untouched


async def test_an_observer_that_raises_is_logged_and_ignored(amqp_url: str) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)

    @app.on_settled
    async def broken(message: Message, outcome: Outcome) -> None:
        raise RuntimeError("audit down")

    after: list[str] = []

    @app.on_settled
    async def later(message: Message, outcome: Outcome) -> None:
        after.append(outcome.kind)

    @app.handler("work")
    async def handle(body: dict[str, int]) -> None: ...

    with capture_logs() as events:
        async with app:
            await app.publish("orders", "order.placed", {"id": 1})
            await app.publish("orders", "order.placed", {"id": 2})
            await wait_for(lambda: len(after) == 2)
    assert after == ["ack", "ack"]
    failed = [e for e in events if e["event"] == "on_settled observer failed; ignored"]
    assert [(e["error"], e["log_level"]) for e in failed] == [
        ("RuntimeError: audit down", "error")
    ] * 2


class GatewayError(Exception):
    pass


class GatewayTimeout(GatewayError):
    pass


class CardDeclined(GatewayError):
    pass


class StolenCard(CardDeclined):
    pass


async def test_retry_filters_take_the_nearest_class_of_the_mro(amqp_url: str) -> None:
    """retry_on=(GatewayError,), dead_letter_on=(CardDeclined,): a GatewayTimeout is
    retried, a StolenCard (a CardDeclined, itself a GatewayError) dead-lettered at once,
    a KeyError (in neither) dead-lettered at once."""
    app, seen = make_app(amqp_url)
    errors = {
        "timeout": GatewayTimeout("slow"),
        "stolen": StolenCard("stolen"),
        "key": KeyError("k"),
    }

    @app.handler("work", retry_on=(GatewayError,), dead_letter_on=(CardDeclined,))
    async def charge(body: dict[str, str], message: Message) -> None:
        if message.attempt == 1:
            raise errors[body["kind"]]

    async with app:
        for kind in errors:
            await app.publish("orders", "order.placed", {"kind": kind})
        await wait_for(lambda: len(seen) == 4, message="four outcomes")
    by_error = sorted((o.error or "-", o.kind) for _, o in seen)
    assert by_error == [
        ("-", "ack"),  # the GatewayTimeout's second attempt
        ("GatewayTimeout: slow", "retry"),
        ("KeyError: 'k'", "dead_letter"),
        ("StolenCard: stolen", "dead_letter"),
    ]


def test_a_class_in_both_filters_is_refused() -> None:
    app = App(load_text(TOPOLOGY))
    with pytest.raises(HandlerError, match="GatewayError in both retry_on and dead_letter_on"):

        @app.handler("work", retry_on=(GatewayError,), dead_letter_on=(GatewayError,))
        async def charge(body: Any) -> None: ...


def test_middleware_and_observer_must_be_async_of_two_parameters() -> None:
    app = App(load_text(TOPOLOGY))
    with pytest.raises(HandlerError, match="must be an async def"):
        app.middleware(lambda m, n: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(HandlerError, match=r"takes \(message, outcome\), not 1"):

        @app.on_settled  # type: ignore[arg-type]
        async def one(message: Message) -> None: ...
