"""Request-reply errors across the wire (DESIGN.md §13), on the real broker."""

from __future__ import annotations

import time
from typing import Any

import aio_pika
import pytest
from pydantic import BaseModel

from rabbitflow import App, Producer, Reject, RemoteError
from rabbitflow.topology import load_text
from tests.helpers import drain, message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  rpc: {type: direct}
  quotes: {type: fanout}
queues:
  pricing:
    bind: [{exchange: rpc, routing_key: pricing.quote}]
    dead_letter: true
  flaky:
    bind: [{exchange: rpc, routing_key: flaky.quote}]
    retry: {max_retries: 1, delay: 10ms}
  quotes.a:
    bind: [{exchange: quotes}]
  quotes.b:
    bind: [{exchange: quotes}]
  quotes.c:
    bind: [{exchange: quotes}]
"""


class Ask(BaseModel):
    sku: str


def make_app(amqp_url: str) -> App:
    app = App(load_text(TOPOLOGY), url=amqp_url)

    @app.handler("pricing")
    async def price(ask: Ask) -> dict[str, float]:
        if ask.sku == "unknown":
            raise Reject(f"unknown sku {ask.sku!r}")
        if ask.sku == "bug":
            raise KeyError("price table")
        return {"price": 12.5}

    @app.handler("flaky")
    async def flaky(ask: Ask) -> None:
        raise ConnectionError("downstream down")

    @app.handler("quotes.a")
    async def a(ask: Ask) -> str:
        return "a"

    @app.handler("quotes.b")
    async def b(ask: Ask) -> str:
        raise ValueError("b cannot quote")

    @app.handler("quotes.c")
    async def c(ask: Ask) -> str:
        return "c"

    return app


async def test_a_failing_handler_raises_remote_error_in_the_caller_at_once(
    amqp_url: str, channel: Any
) -> None:
    app = make_app(amqp_url)
    async with app, Producer(amqp_url) as producer:
        assert await producer.request("rpc", "pricing.quote", {"sku": "book"}) == {"price": 12.5}
        began = time.monotonic()
        with pytest.raises(RemoteError) as rejected:
            await producer.request("rpc", "pricing.quote", {"sku": "unknown"}, timeout=10)
        assert time.monotonic() - began < 5  # not the 10 s timeout
        assert (rejected.value.type, rejected.value.message) == ("Reject", "unknown sku 'unknown'")
        assert str(rejected.value) == "Reject: unknown sku 'unknown'"
        with pytest.raises(RemoteError) as bug:
            await producer.request("rpc", "pricing.quote", {"sku": "bug"}, timeout=10)
        assert (bug.value.type, bug.value.message) == ("KeyError", "'price table'")
        with pytest.raises(RemoteError) as undecodable:
            await producer.request("rpc", "pricing.quote", {"no_sku": 1}, timeout=10)
        assert undecodable.value.type == "BodyDecodeError"
        assert undecodable.value.message == "sku: Field required"
        # The requests themselves were dead-lettered as usual.
        await wait_for(lambda: _count_is(channel, "pricing.dlq", 3), timeout=5)
        # A retried request: the caller hears of the first failure, the retry still runs.
        with pytest.raises(RemoteError, match="ConnectionError: downstream down"):
            await producer.request("rpc", "flaky.quote", {"sku": "x"}, timeout=10)
        await wait_for(lambda: _count_is(channel, "flaky.dlq", 1), timeout=5)
    [dead] = await drain(channel, "flaky.dlq")
    assert dead.headers["x-rabbitflow-attempt"] == 2


async def test_the_error_reply_format_for_other_languages(amqp_url: str) -> None:
    """A client without rabbitflow: direct reply-to, then read the reply's headers."""
    app = make_app(amqp_url)
    async with app:
        connection = await aio_pika.connect(amqp_url)
        try:
            ch = await connection.channel()
            replies = await ch.get_queue("amq.rabbitmq.reply-to", ensure=False)
            got: list[aio_pika.abc.AbstractIncomingMessage] = []
            await replies.consume(got.append, no_ack=True)
            exchange = await ch.get_exchange("rpc", ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    b'{"sku": "unknown"}',
                    content_type="application/json",
                    correlation_id="c-42",
                    reply_to="amq.rabbitmq.reply-to",
                ),
                routing_key="pricing.quote",
            )
            await wait_for(lambda: len(got) == 1, timeout=5)
        finally:
            await connection.close()
    [reply] = got
    assert reply.correlation_id == "c-42"
    assert reply.body == b""
    assert reply.headers == {
        "x-rabbitflow-error": "Reject: unknown sku 'unknown'",
        "x-rabbitflow-error-type": "Reject",
    }


async def test_gather_keeps_error_replies_apart_from_answers(amqp_url: str) -> None:
    app = make_app(amqp_url)
    async with app, Producer(amqp_url) as producer:
        began = time.monotonic()
        replies = await producer.gather("quotes", "", {"sku": "book"}, expected=3, timeout=10)
        assert time.monotonic() - began < 5  # the error reply counts: not the 10 s timeout
    assert sorted(replies) == ["a", "c"]
    assert [(e.type, e.message) for e in replies.errors] == [("ValueError", "b cannot quote")]


async def _count_is(channel: Any, queue: str, n: int) -> bool:
    return await message_count(channel, queue) == n
