"""A pricing service answering requests over RabbitMQ (request-reply).

Run: ``rabbitflow run workers.rpc:app``; call it with ``python -m workers.rpc_client``.
A handler's return value is the reply; the caller waits on direct reply-to.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from rabbitflow import App, Reject

app = App(topology="topologies/rpc.yaml")

PRICES = {"book": Decimal("12.50"), "lamp": Decimal("39.90"), "chair": Decimal("89.00")}


class QuoteRequest(BaseModel):
    sku: str
    quantity: int = Field(gt=0, le=10_000)


class Quote(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal
    total: Decimal


@app.handler("rpc.pricing", prefetch=64)
async def quote(request: QuoteRequest) -> Quote:
    price = PRICES.get(request.sku)
    if price is None:
        raise Reject(f"unknown sku {request.sku!r}")
    discount = Decimal("0.9") if request.quantity >= 100 else Decimal(1)
    total = (price * request.quantity * discount).quantize(Decimal("0.01"))
    return Quote(sku=request.sku, quantity=request.quantity, unit_price=price, total=total)
