"""``rabbitflow run --processes 1:4`` grows under a backlog and shrinks after it drains,
never leaving its bounds (DESIGN.md §8), on the real broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand
from tests.integration.observability.scrape import free_port, sample, scrape
from tests.integration.worker.procs import (  # noqa: F401
    TOPOLOGY,
    consumer_count,
    publish_ids,
    worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def processes_gauge(port: int) -> list[float]:
    """``rabbitflow_processes`` from the endpoint (nothing while it is not up yet)."""
    try:
        value = sample(scrape(port), "rabbitflow_processes")
    except (httpx.HTTPError, ValueError):
        return []
    return [] if value is None else [value]


FAST = {
    "HANDLER_SLEEP": "0.2",
    "HANDLER_PREFETCH": "2",
    "RABBITFLOW_AUTOSCALE_INTERVAL": "0.3",
    "RABBITFLOW_AUTOSCALE_GROW_AFTER": "2",
    "RABBITFLOW_AUTOSCALE_IDLE": "2",
}


async def test_grows_under_a_backlog_and_shrinks_back(
    worker: Any,  # noqa: F811
    amqp_url: str,
    vhost: str,
) -> None:
    connection = await connect(amqp_url)
    await declare(connection, expand(load_text(TOPOLOGY)))
    await connection.close()
    await publish_ids(amqp_url, range(400))
    port = free_port()
    w = worker(**FAST)
    w.start("--processes", "1:4", "--metrics-port", str(port))
    counts: list[int] = []
    gauge: list[float] = []  # rabbitflow_processes, scraped from the supervisor's endpoint
    deadline = time.monotonic() + 90
    while sum(w.done().values()) < 400 and time.monotonic() < deadline:
        counts.append(await consumer_count(vhost))
        gauge.extend(processes_gauge(port))
        await asyncio.sleep(0.3)
    assert sum(w.done().values()) >= 400, "the backlog was not drained in time"
    assert max(counts) > 1, counts
    assert max(counts) <= 4 and min(counts) >= 0
    while time.monotonic() < deadline + 30:
        counts.append(n := await consumer_count(vhost))
        gauge.extend(processes_gauge(port))
        if n == 1 and gauge[-1:] == [1.0]:
            break
        await asyncio.sleep(0.3)
    assert counts[-1] == 1, counts[-10:]
    assert max(counts) <= 4
    await asyncio.sleep(1.5)  # and it stays at the minimum
    assert await consumer_count(vhost) == 1
    # The gauge follows the supervisor: up past 1 under the backlog, back to 1, never
    # outside the bounds.
    gauge.extend(processes_gauge(port))
    assert gauge, "rabbitflow_processes was never scraped"
    assert max(gauge) > 1, gauge
    assert min(gauge) >= 1 and max(gauge) <= 4, gauge
    assert gauge[-1] == 1, gauge[-10:]
    assert w.stop() == 0
    out = w.output()
    assert "scaling up" in out and "backlog of" in out
    assert "scaling down" in out and "idle for 2s" in out
    pids = {line[3] for line in w.lines()}
    assert 2 <= len(pids) <= 4
