"""``/metrics`` and ``/healthz`` of an App on the real broker (DESIGN.md §5)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from rabbitflow import App, Message, Reject
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.helpers import AUTH, MANAGEMENT, close_connections, quote, wait_for
from tests.integration.observability.scrape import free_port, healthz, reachable, sample, scrape

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  work:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 2, backoff: linear, delay: 50ms}
"""


def make_app(amqp_url: str, port: int) -> App:
    settings = Settings(url=amqp_url, metrics_port=port, queue_poll_interval=0.1)
    return App(load_text(TOPOLOGY), settings=settings)


async def test_counters_per_outcome_are_exact_after_real_traffic(amqp_url: str) -> None:
    """5 acks (3 at once, 2 after one retry), 2 dead letters (one after two retries, one
    rejected at once): exactly 4 retries and 2 dead letters."""
    port = free_port()
    app = make_app(amqp_url, port)
    seen: dict[str, int] = {}

    @app.handler("work")
    async def handle(body: dict[str, Any], message: Message) -> None:
        kind = body["kind"]
        seen[body["id"]] = message.attempt
        if kind == "flaky" and message.attempt == 1:
            raise ConnectionError("downstream hiccup")
        if kind == "broken":
            raise RuntimeError("always fails")
        if kind == "poison":
            raise Reject("cannot ever work")

    kinds = ["ok"] * 3 + ["flaky"] * 2 + ["broken", "poison"]
    async with app:
        for i, kind in enumerate(kinds):
            await app.publish("orders", "order.placed", {"id": str(i), "kind": kind})

        def settled() -> bool:
            s = scrape(port)
            return (
                sum(
                    sample(s, "rabbitflow_messages_total", queue="work", outcome=o) or 0
                    for o in ("ack", "dead_letter")
                )
                == 7
            )

        await wait_for(lambda: settled(), timeout=20, interval=0.05, message="7 settled")
        await wait_for(
            lambda: sample(scrape(port), "rabbitflow_dead_letter_messages", queue="work") == 2,
            timeout=10,
            message="dlq depth",
        )
        s = scrape(port)
        status, body = healthz(port)
    count = {
        o: sample(s, "rabbitflow_messages_total", queue="work", outcome=o)
        for o in ("ack", "retry", "dead_letter", "nack")
    }
    assert count == {"ack": 5, "retry": 4, "dead_letter": 2, "nack": 0}
    assert sample(s, "rabbitflow_handler_seconds_count", queue="work") == 11
    assert sample(s, "rabbitflow_retries_total", queue="work", delay="50ms") == 3
    assert sample(s, "rabbitflow_retries_total", queue="work", delay="100ms") == 1
    assert sample(s, "rabbitflow_dead_letters_total", queue="work", error="RuntimeError") == 1
    assert sample(s, "rabbitflow_dead_letters_total", queue="work", error="Reject") == 1
    assert sample(s, "rabbitflow_published_total", exchange="orders", outcome="confirmed") == 7
    assert (
        sample(s, "rabbitflow_published_total", exchange="amq.default", outcome="confirmed") == 4
    )  # the retry copies
    assert sample(s, "rabbitflow_published_total", exchange="work.dlx", outcome="confirmed") == 2
    assert sample(s, "rabbitflow_publish_confirm_seconds_count", exchange="orders") == 7
    assert sample(s, "rabbitflow_queue_messages", queue="work") == 0
    assert sample(s, "rabbitflow_in_flight", queue="work") == 0
    assert (status, body["status"], body["consumers"]) == (200, "ok", {"work": "consuming"})
    # the endpoint goes away with the app
    assert not reachable(port)


async def test_in_flight_and_queue_depth_show_a_backlog(amqp_url: str) -> None:
    port = free_port()
    app = make_app(amqp_url, port)
    release = asyncio.Event()

    @app.handler("work", prefetch=3)
    async def slow(body: dict[str, Any]) -> None:
        await release.wait()

    async with app:
        for i in range(10):
            await app.publish("orders", "order.placed", {"id": i})
        await wait_for(
            lambda: sample(scrape(port), "rabbitflow_in_flight", queue="work") == 3,
            timeout=10,
            message="3 in flight",
        )
        await wait_for(
            lambda: sample(scrape(port), "rabbitflow_queue_messages", queue="work") == 7,
            timeout=10,
            message="depth 7",
        )
        release.set()
        await wait_for(
            lambda: sample(scrape(port), "rabbitflow_queue_messages", queue="work") == 0,
            timeout=10,
            message="drained",
        )


def _delete_queue(vhost: str, queue: str) -> None:
    with httpx.Client(auth=AUTH, timeout=5) as api:
        api.delete(f"{MANAGEMENT}/queues/{quote(vhost)}/{quote(queue)}").raise_for_status()


def _set_permissions(vhost: str, allow: bool) -> None:
    url = f"{MANAGEMENT}/permissions/{quote(vhost)}/guest"
    with httpx.Client(auth=AUTH, timeout=5) as api:
        if allow:
            api.put(url, json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        else:
            api.delete(url).raise_for_status()


async def test_healthz_is_503_while_reconnecting_then_200_again(amqp_url: str, vhost: str) -> None:
    """The worker's connections are closed while the user may not reconnect: /healthz
    answers 503 with the reason until access is back and the consumers resumed."""
    port = free_port()
    app = make_app(amqp_url, port)

    @app.handler("work")
    async def handle(body: dict[str, Any]) -> None:
        pass

    async with app:
        assert healthz(port)[0] == 200
        _set_permissions(vhost, allow=False)
        try:
            await wait_for(
                lambda: close_connections(vhost) >= 0 and healthz(port)[0] == 503,
                timeout=10,
                interval=0.1,
                message="503",
            )
            status, body = healthz(port)
            assert status == 503
            assert body["status"] == "unavailable"
            assert body["reasons"] == ["not connected to the broker (reconnecting)"]
            await asyncio.sleep(0.5)
            assert healthz(port)[0] == 503  # still reconnecting: access is refused
        finally:
            _set_permissions(vhost, allow=True)
        await wait_for(
            lambda: healthz(port)[0] == 200,
            timeout=20,
            interval=0.1,
            message="200 after reconnecting",
        )
        assert healthz(port)[1]["consumers"] == {"work": "consuming"}


async def test_healthz_is_503_after_the_broker_cancelled_a_consumer(
    amqp_url: str, vhost: str
) -> None:
    """With --exit-on-cancel the worker does not redeclare a deleted queue: /healthz
    names the consumer that is down."""
    port = free_port()
    app = make_app(amqp_url, port)

    @app.handler("work")
    async def handle(body: dict[str, Any]) -> None:
        pass

    await app.start(exit_on_cancel=True)
    try:
        assert healthz(port)[0] == 200
        _delete_queue(vhost, "work")
        await wait_for(lambda: healthz(port)[0] == 503, timeout=10, message="503")
        assert healthz(port)[1]["reasons"] == ["consumer down: work"]
        assert healthz(port)[1]["consumers"] == {"work": "down"}
    finally:
        await app.stop()


async def test_requests_and_replies_are_counted_as_publishes(amqp_url: str) -> None:
    port = free_port()
    app = make_app(amqp_url, port)

    @app.handler("work")
    async def double(body: dict[str, Any]) -> dict[str, Any]:
        return {"n": body["n"] * 2}

    async with app:
        assert await app.request("orders", "order.quote", {"n": 21}) == {"n": 42}
        s = scrape(port)
    assert sample(s, "rabbitflow_published_total", exchange="orders", outcome="confirmed") == 1
    assert (
        sample(s, "rabbitflow_published_total", exchange="amq.default", outcome="confirmed") == 1
    )  # the reply
    assert sample(s, "rabbitflow_messages_total", queue="work", outcome="ack") == 1
