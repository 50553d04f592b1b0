"""The example order services, tested the way a user would: with rabbitflow's pytest
plugin, on the in-memory broker (virtual time) and on a real RabbitMQ vhost."""

from __future__ import annotations

from typing import Any

import pytest

from rabbitflow.testing import run_app
from workers import orders

ORDER = {
    "customer": "ada",
    "amount": "25.00",
    "card": "4111-ok",
    "lines": [{"sku": "book", "quantity": 1}],
}


def order(order_id: str, **changes: Any) -> dict[str, Any]:
    return {**ORDER, "order_id": order_id, **changes}


async def test_a_good_order_is_reserved_charged_shipped_and_notified(memory_url: str) -> None:
    async with run_app(orders.app, memory_url) as harness:
        await harness.publish("orders", "order.placed", order("A-1"))
        await harness.wait_idle()
    assert [c.outcome for c in harness.calls_of("payments.charge")] == ["ack"]
    assert [c.outcome for c in harness.calls_of("inventory.reserve")] == ["ack"]
    assert [c.body.order_id for c in harness.calls_of("shipping.prepare")] == ["A-1"]
    # order.placed is also a notification (orders → notifications, order.*)
    assert len(harness.calls_of("notify.email")) == 1
    assert len(harness.calls_of("notify.sms")) == 1


async def test_a_flaky_gateway_is_retried_with_backoff_then_succeeds(memory_url: str) -> None:
    async with run_app(orders.app, memory_url) as harness:
        await harness.publish("orders", "order.placed", order("A-2", card="4000-flaky"))
        await harness.wait_idle()
    calls = harness.calls_of("payments.charge")
    assert [(c.attempt, c.outcome) for c in calls] == [(1, "retry"), (2, "retry"), (3, "ack")]
    assert type(calls[0].error).__name__ == "GatewayTimeout"


async def test_poison_orders_are_dead_lettered_at_once(memory_url: str) -> None:
    async with run_app(orders.app, memory_url) as harness:
        await harness.publish("orders", "order.placed", order("A-3", card="4000-declined"))
        await harness.publish("orders", "order.placed", order("A-4", amount="0"))
        await harness.publish("orders", "order.placed", {"order_id": "A-5"})  # malformed
        await harness.wait_idle()
        dead = await harness.dead_letters("payments.charge")
    errors = sorted(d.error or "" for d in dead)
    assert errors[0].startswith("BodyDecodeError: customer: Field required")
    assert errors[1:] == [
        "Reject: amount must be positive, got 0",
        "Reject: card declined by the issuer",
    ]
    assert harness.retried("payments.charge") == []
    assert harness.calls_of("shipping.prepare") == []


async def test_out_of_stock_exhausts_its_retries_into_the_dead_letters(memory_url: str) -> None:
    async with run_app(orders.app, memory_url) as harness:
        await harness.publish(
            "orders", "order.placed", order("A-6", lines=[{"sku": "SOLD-OUT", "quantity": 1}])
        )
        await harness.wait_idle()
        (dead,) = await harness.dead_letters("inventory.reserve")
    assert [c.attempt for c in harness.calls_of("inventory.reserve")] == [1, 2, 3, 4]
    assert dead.error == "OutOfStock: no stock for SOLD-OUT"


async def test_an_event_nobody_wants_is_parked_not_lost(memory_url: str) -> None:
    async with run_app(orders.app, memory_url) as harness:
        await harness.publish("orders", "refund.requested", {"order_id": "A-7"})
        await harness.wait_idle()
    assert len(harness.calls_of("orders.unrouted")) == 1


@pytest.fixture
def rabbitflow_topology() -> str:
    return "topologies/orders.yaml"


@pytest.mark.broker
async def test_the_order_flow_on_rabbitmq(rabbitflow_vhost: Any) -> None:
    async with run_app(orders.app, rabbitflow_vhost.url) as harness:
        await harness.publish("orders", "order.placed", order("B-1", card="4000-flaky"))
        await harness.publish("orders", "order.placed", order("B-2", card="4000-declined"))
        await harness.wait_idle(timeout=20)
        (dead,) = await harness.dead_letters("payments.charge")
    attempts = [c.attempt for c in harness.calls_of("payments.charge") if c.body.order_id == "B-1"]
    assert attempts == [1, 2, 3]
    assert dead.error == "Reject: card declined by the issuer"
    assert [c.body.order_id for c in harness.calls_of("shipping.prepare")] == ["B-1"]
