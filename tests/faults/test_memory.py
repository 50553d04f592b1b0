"""Memory: draining a deep queue of large messages keeps the worker's RSS within
prefetch x message size x 2 (raw body and decoded body) plus a constant, however many
messages there are."""

from __future__ import annotations

import os

import psutil
import pytest

from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from rabbitflow.settings import Settings
from tests.faults.conftest import WorkerFactory
from tests.faults.harness import PublishLog, check, dead_letter_ids, until
from tests.faults.nodes import Node

pytestmark = [pytest.mark.slow]

MESSAGES = int(os.environ.get("RABBITFLOW_FAULTS_MEMORY_MESSAGES", "10000"))
"""The issue asks for 100,000 (10 GB through the broker); CI drains 10,000 (1 GB), ten
times the prefetch, which is what shows the bound does not grow with the queue."""
SIZE = 100_000
PREFETCH = 1000
CONSTANT = 64 * 2**20
COPIES = 2
"""While a handler runs, the worker holds each delivery's body twice: the raw bytes
(``Message.body``) and the handler's decoded value (here a 100 KB string)."""
TOPOLOGY = """
version: 1
queues:
  jobs: {type: classic}
"""


@pytest.mark.timeout(600)
async def test_draining_large_messages_keeps_rss_bounded(
    workers: WorkerFactory, live_node: Node, node_url: str
) -> None:
    # Handlers take a while, so the whole prefetch window is held in the worker at once.
    w = workers(node_url, TOPOLOGY, HANDLER_PREFETCH=str(PREFETCH), HANDLER_SLEEP="0.3")
    w.start()
    await until(lambda: "worker connected" in w.output(), timeout=30, message="up")
    assert w.process is not None
    proc = psutil.Process(w.process.pid)
    baseline = proc.memory_info().rss
    w.stop()  # fill the queue first, then drain it with a fresh worker
    pad = "x" * (SIZE - 20)
    log = PublishLog()
    async with Producer(settings=Settings(url=node_url, publish_timeout=60)) as producer:
        result = await producer.publish_many(
            (Outgoing("", "jobs", {"id": i, "pad": pad}) for i in range(MESSAGES)), window=200
        )
    log.status = {i: "confirmed" for i in result.confirmed}
    assert len(result.confirmed) == MESSAGES
    w.start()
    assert w.process is not None
    proc = psutil.Process(w.process.pid)
    peak = 0

    async def drained() -> bool:
        nonlocal peak
        peak = max(peak, proc.memory_info().rss)
        return len(w.done()) >= MESSAGES

    seconds = await until(drained, timeout=400, interval=0.1, message="drained")
    assert w.stop() == 0
    growth = peak - baseline
    v = check(
        f"drain {MESSAGES} x 100 KB at prefetch {PREFETCH}",
        log,
        w.ledger,
        await dead_letter_ids(node_url),
        baseline_rss_mb=round(baseline / 2**20),
        peak_rss_mb=round(peak / 2**20),
        growth_mb=round(growth / 2**20),
        bound_mb=round((COPIES * PREFETCH * SIZE + CONSTANT) / 2**20),
        rate_msg_s=round(MESSAGES / seconds),
    )
    v.record()
    assert (v.lost, v.unexpected, v.duplicated) == (0, 0, 0)
    assert growth <= COPIES * PREFETCH * SIZE + CONSTANT, growth / 2**20
