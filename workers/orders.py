"""The shop's order services: stock, payments, shipping and notifications.

Run: ``rabbitflow run workers.orders:app`` (topology: ``topologies/orders.yaml``).

The "downstream systems" here are simulated so the demo is deterministic: a card number
ending in ``-flaky`` makes the payment gateway time out on the first two attempts, one
ending in ``-declined`` is refused for good, and stock runs out for SKU ``SOLD-OUT``.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import structlog
from pydantic import BaseModel, Field

from rabbitflow import App, Message, Reject

app = App(topology="topologies/orders.yaml")
log = structlog.get_logger("shop")


class Line(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class OrderPlaced(BaseModel):
    order_id: str
    customer: str
    amount: Decimal
    card: str
    lines: list[Line] = Field(min_length=1)


class OrderPaid(BaseModel):
    order_id: str
    address: str | None = None


class GatewayTimeout(Exception):
    """The payment gateway did not answer: worth another try."""


class OutOfStock(Exception):
    """A SKU has no stock left; the warehouse may restock, so it is retried."""


@app.handler("inventory.reserve", prefetch=16)
async def reserve_stock(order: OrderPlaced, message: Message) -> None:
    if message.routing_key == "order.cancelled":
        log.info("stock released", order_id=order.order_id)
        return
    for line in order.lines:
        if line.sku == "SOLD-OUT":
            raise OutOfStock(f"no stock for {line.sku}")
    await asyncio.sleep(0.01)  # the stock service
    log.info("stock reserved", order_id=order.order_id, lines=len(order.lines))


@app.handler("payments.charge", prefetch=8, timeout=5)
async def charge(order: OrderPlaced, message: Message) -> None:
    if order.amount <= 0:
        raise Reject(f"amount must be positive, got {order.amount}")
    if order.card.endswith("-declined"):
        raise Reject("card declined by the issuer")
    if order.card.endswith("-flaky") and message.attempt <= 2:
        raise GatewayTimeout("payment gateway did not answer within 2s")
    await asyncio.sleep(0.02)  # the gateway round trip
    await app.publish(
        "orders",
        "order.paid.card",
        OrderPaid(order_id=order.order_id),
        message_id=f"paid-{order.order_id}",
    )
    log.info("payment captured", order_id=order.order_id, amount=str(order.amount))


@app.handler("shipping.prepare", prefetch=4)
def prepare_shipment(paid: OrderPaid) -> None:
    """A plain function: it runs in a worker thread, like a blocking label-printer SDK."""
    log.info("shipment prepared", order_id=paid.order_id)


@app.handler("notify.email")
async def send_email(event: dict[str, object], message: Message) -> None:
    log.info("email sent", routing_key=message.routing_key, order_id=event.get("order_id"))


@app.handler("notify.sms")
async def send_sms(event: dict[str, object], message: Message) -> None:
    log.info("sms sent", routing_key=message.routing_key, order_id=event.get("order_id"))


@app.handler("analytics.events", prefetch=64)
async def track(event: dict[str, object], message: Message) -> None:
    log.debug("event tracked", routing_key=message.routing_key)


@app.handler("orders.unrouted")
async def park_unrouted(body: bytes, message: Message) -> None:
    log.warning("order event nobody subscribes to", routing_key=message.routing_key)
