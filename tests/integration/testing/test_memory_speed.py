"""A user's handler test with a three-step retry ladder (1 s / 10 s / 1 min) runs in
under a second on the in-memory broker: the virtual clock jumps over the delays."""

from __future__ import annotations

import time
from typing import Any

from rabbitflow import App
from rabbitflow.testing import MemoryBroker, run_app
from rabbitflow.topology.loader import load_text

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  payments.charge:
    bind: [{exchange: orders, routing_key: order.placed}]
    retry: {max_retries: 3, delays: [1s, 10s, 1m]}
"""


async def test_three_step_retry_ladder_runs_in_under_a_second(
    memory_broker: MemoryBroker, memory_url: str
) -> None:
    app = App(load_text(TOPOLOGY))
    attempts: list[int] = []

    @app.handler("payments.charge")
    async def charge(order: dict[str, Any]) -> None:
        attempts.append(len(attempts) + 1)
        raise ConnectionError("gateway down")

    virtual_start = memory_broker.now
    started = time.perf_counter()
    async with run_app(app, memory_url) as harness:
        await harness.publish("orders", "order.placed", {"order_id": "42"})
        await harness.wait_idle()
        (dead,) = await harness.dead_letters("payments.charge")
    elapsed = time.perf_counter() - started

    assert attempts == [1, 2, 3, 4]
    assert [c.outcome for c in harness.calls_of("payments.charge")] == [
        "retry",
        "retry",
        "retry",
        "dead_letter",
    ]
    assert dead.error == "ConnectionError: gateway down"
    assert memory_broker.now - virtual_start >= 71  # 1 s + 10 s + 1 min of virtual time
    assert elapsed < 1.0, f"took {elapsed:.3f}s"
