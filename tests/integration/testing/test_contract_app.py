"""The contract, through an `App`: rabbitflow's retry ladder and dead letters, and
request-reply over direct reply-to, give the same results on RabbitMQ and in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from rabbitflow import App, Message, Reject
from rabbitflow.testing import run_app
from rabbitflow.topology.loader import load_text
from tests.integration.testing.backends import Backend, normalize, open_backend

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic, durable: false}
queues:
  charge:
    durable: false
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 3, delays: [50ms, 100ms, 150ms]}
  quote:
    durable: false
    bind: [{exchange: orders, routing_key: "quote"}]
"""


@pytest.fixture(params=["rabbitmq", "memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with open_backend(request.param) as b:
        yield b


def make_app() -> App:
    app = App(load_text(TOPOLOGY))

    @app.handler("charge")
    async def charge(order: dict[str, Any], message: Message) -> None:
        if order.get("poison"):
            raise Reject("poison")
        if order.get("fail"):
            raise RuntimeError(f"declined on attempt {message.attempt}")

    @app.handler("quote")
    async def quote(body: dict[str, Any]) -> dict[str, Any]:
        return {"price": body["qty"] * 2}

    return app


RABBITFLOW_HEADERS = (
    "x-rabbitflow-attempt",
    "x-rabbitflow-queue",
    "x-rabbitflow-error",
    "x-rabbitflow-original-exchange",
    "x-rabbitflow-original-routing-key",
)


async def test_retry_ladder_then_dead_letter(backend: Backend) -> None:
    async with run_app(make_app(), backend.url) as h:
        await h.publish("orders", "order.placed", {"id": 1, "fail": True})
        await h.publish("orders", "order.placed", {"id": 2})
        await h.wait_idle(timeout=20)
        assert [(c.body["id"], c.attempt, c.outcome) for c in h.calls_of("charge")] == [
            (1, 1, "retry"),
            (2, 1, "ack"),
            (1, 2, "retry"),
            (1, 3, "retry"),
            (1, 4, "dead_letter"),
        ]
        assert [c.message.routing_key for c in h.calls_of("charge")] == ["order.placed"] * 5
        (dead,) = await h.dead_letters("charge")
    headers = normalize(dead.headers)
    assert {k: headers[k] for k in RABBITFLOW_HEADERS} == {
        "x-rabbitflow-attempt": 4,
        "x-rabbitflow-queue": "charge",
        "x-rabbitflow-error": "RuntimeError: declined on attempt 4",
        "x-rabbitflow-original-exchange": "orders",
        "x-rabbitflow-original-routing-key": "order.placed",
    }
    assert "x-death" not in headers
    assert dead.json() == {"id": 1, "fail": True}


async def test_reject_dead_letters_at_once(backend: Backend) -> None:
    async with run_app(make_app(), backend.url) as h:
        await h.publish("orders", "order.placed", {"id": 3, "poison": True})
        await h.wait_idle(timeout=20)
        assert [c.outcome for c in h.calls_of("charge")] == ["dead_letter"]
        (dead,) = await h.dead_letters("charge")
    assert (dead.attempt, dead.error, dead.queue) == (1, "Reject: poison", "charge.dlq")


async def test_request_reply_over_direct_reply_to(backend: Backend) -> None:
    async with run_app(make_app(), backend.url) as h:
        assert await h.app.request("orders", "quote", {"qty": 21}, timeout=10) == {"price": 42}
        assert h.received("quote") == [{"qty": 21}]


SEMANTICS_TOPOLOGY = """
version: 1
exchanges:
  events: {type: topic, delayed: true}
queues:
  ingest:
    bind: [{exchange: events, routing_key: "ev.*"}]
"""


async def test_compressed_and_delayed_through_an_app(backend: Backend) -> None:
    """gzip is decoded before the handler; a delayed message arrives after its delay with
    its routing key (the memory clock jumps, RabbitMQ waits 1 s)."""
    app = App(load_text(SEMANTICS_TOPOLOGY))

    @app.handler("ingest")
    async def ingest(body: dict[str, Any]) -> None:
        return None

    async with run_app(app, backend.url) as h:
        await h.publish("events", "ev.big", {"text": "x" * 5000}, compress=True)
        await h.publish("events", "ev.later", {"n": 1}, delay=1)
        await h.wait_until(lambda: len(h.calls_of("ingest")) == 1, timeout=10)
        assert h.received("ingest") == [{"text": "x" * 5000}]
        await h.wait_until(lambda: len(h.calls_of("ingest")) == 2, timeout=10)
        later = h.calls_of("ingest")[1]
        assert later.message.routing_key == "ev.later" and later.body == {"n": 1}
        assert "x-rabbitflow-delayed-until" in later.message.headers
