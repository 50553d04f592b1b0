"""Faults of the broker, on a RabbitMQ node of our own (never the shared one):
stop_app/start_app and kill -9 under load, a hung (SIGSTOPped) broker, a handler slower
than the broker's consumer_timeout.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import CONSUMER_TIMEOUT_MS, WorkerFactory, start_target
from tests.faults.harness import PublishLog, check, dead_letter_ids, publish_tracked, until
from tests.faults.nodes import Node
from tests.helpers import consumer_count_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PUBLISH_TIMEOUT = 3.0
CONNECT_TIMEOUT = 1.0
NEVER_HANGS = PUBLISH_TIMEOUT + CONNECT_TIMEOUT + 1.0
"""The longest one publish call may take, outage or not."""


async def consuming(url: str, consumers: int = 1) -> bool:
    try:
        return await consumer_count_of(url, "jobs") == consumers
    except Exception:
        return False


async def _outage(node: Node, node_url: str, w: object, log: PublishLog, fault: str) -> float:
    """Publish under load through the fault; return seconds from the broker's return to
    the worker consuming again."""
    stop = asyncio.Event()
    publisher = asyncio.create_task(
        publish_tracked(
            node_url,
            range(10**7),
            log,
            window=20,
            pace=0.004,
            stop=stop,
            publish_timeout=PUBLISH_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT,
        )
    )
    try:
        await asyncio.sleep(3)
        if fault == "stop_app":
            await asyncio.to_thread(node.ctl, "stop_app")
            await asyncio.sleep(4)
            await asyncio.to_thread(node.ctl, "start_app")
        else:
            await asyncio.to_thread(node.kill9)
            await asyncio.sleep(2)
            await asyncio.to_thread(node.start)
        back = time.monotonic()
        await until(
            lambda: consuming(node_url), timeout=60, interval=0.2, message="worker consuming again"
        )
        recovery = time.monotonic() - back
        await asyncio.sleep(3)  # load after the recovery too
    finally:
        stop.set()
        await asyncio.wait_for(publisher, 60)
    # The same publisher confirms again after the outage.
    assert log.last_confirmed > back + recovery, "publisher did not recover"
    return recovery


@pytest.mark.parametrize("fault", ["stop_app", "kill -9"])
async def test_broker_outage_under_load(
    workers: WorkerFactory, live_node: Node, node_url: str, fault: str
) -> None:
    """Nothing confirmed is lost; publishes during the outage fail or time out within
    publish_timeout, never hang; the worker resumes on its own."""
    prefetch = 20
    w = workers(node_url, HANDLER_SLEEP="0.002", HANDLER_PREFETCH=str(prefetch))
    w.start()
    await until(lambda: consuming(node_url), timeout=30, message="consuming")
    log = PublishLog()
    recovery = await _outage(live_node, node_url, w, log, fault)
    confirmed = log.ids("confirmed")
    await until(
        lambda: confirmed <= {int(k) for k in w.done()},
        timeout=60,
        message="every confirmed message handled",
    )
    assert w.stop() == 0
    v = check(
        f"broker {fault} under load",
        log,
        w.ledger,
        await dead_letter_ids(node_url),
        recovery_s=round(recovery, 2),
        longest_publish_s=round(log.longest, 2),
        errors=dict(log.errors),
        bound=f"D<={prefetch}+unknown",
    )
    v.record()
    assert (v.lost, v.unexpected) == (0, 0)
    assert v.failed + v.unknown > 0  # the outage was felt by the publisher
    assert log.longest <= NEVER_HANGS
    assert v.duplicated <= prefetch + v.unknown
    assert recovery < 20


HEARTBEAT = 2


async def test_hung_broker_detected_by_heartbeat(
    workers: WorkerFactory, live_node: Node, node_url: str
) -> None:
    """kill -STOP the broker: the worker notices the dead connection through missed
    heartbeats within (heartbeat + 1) x 3 s (+2 s), and recovers after kill -CONT."""
    w = workers(node_url, HANDLER_PREFETCH="10", RABBITFLOW_HEARTBEAT=str(HEARTBEAT))
    w.start()
    await until(lambda: consuming(node_url), timeout=30, message="consuming")
    log = PublishLog()
    await publish_tracked(node_url, range(200), log)
    await until(lambda: len(w.done()) == 200, timeout=30, message="first batch")
    live_node.pause()
    try:
        detected = await until(
            lambda: "connection lost" in w.output(),
            timeout=30,
            interval=0.1,
            message="dead connection detected",
        )
        await asyncio.sleep(1)
    finally:
        live_node.resume()
    back = time.monotonic()
    await until(lambda: consuming(node_url), timeout=60, interval=0.2, message="resumed")
    recovery = time.monotonic() - back
    await publish_tracked(node_url, range(200, 400), log)
    await until(lambda: len(w.done()) == 400, timeout=30, message="second batch")
    assert w.stop() == 0
    v = check(
        f"hung broker (SIGSTOP), heartbeat {HEARTBEAT}s",
        log,
        w.ledger,
        await dead_letter_ids(node_url),
        detected_s=round(detected, 2),
        recovery_s=round(recovery, 2),
    )
    v.record()
    # At-least-once: an ack written while the broker was stopped may never be read, so
    # up to a prefetch of deliveries can come again after the reconnect.
    assert (v.lost, v.unexpected) == (0, 0)
    assert v.duplicated <= 10
    # aiormq declares a connection dead after (heartbeat + 1) * 3 s of silence; measured
    # 9.4-9.8 s, plus what a loaded 2-core machine adds to noticing it in the log.
    assert detected <= (HEARTBEAT + 1) * 3 + 5


async def test_handler_slower_than_consumer_timeout(
    workers: WorkerFactory, live_node: Node, node_url: str
) -> None:
    """The broker closes the channel of a delivery held past consumer_timeout: the worker
    logs why, restarts the consumer, and the redelivered message is handled."""
    w = workers(node_url, HANDLER_SLEEP=str(CONSUMER_TIMEOUT_MS / 1000 + 4))
    start_target(w, "tests.faults.apps.slow_first:app")
    await until(lambda: consuming(node_url), timeout=30, message="consuming")
    log = PublishLog()
    await publish_tracked(node_url, range(3), log)
    began = time.monotonic()
    await until(lambda: len(w.done()) >= 3, timeout=60, message="all handled")
    took = time.monotonic() - began
    await until(lambda: consuming(node_url), timeout=20, message="consumer back")
    assert w.process is not None
    assert w.process.poll() is None  # no crash
    assert w.stop() == 0
    out = w.output()
    assert "consumer_timeout" in out
    v = check(
        "handler slower than consumer_timeout",
        log,
        w.ledger,
        await dead_letter_ids(node_url),
        took_s=round(took, 2),
    )
    v.record()
    assert (v.lost, v.unexpected) == (0, 0)
    assert v.redelivered >= 1
