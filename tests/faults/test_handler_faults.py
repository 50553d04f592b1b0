"""Handlers that misbehave: blocking the event loop, sync handlers outliving heartbeats."""

from __future__ import annotations

import re
import time

import pytest

from tests.faults.conftest import WorkerFactory, start_target
from tests.faults.harness import PublishLog, check, dead_letter_ids, publish_tracked, until
from tests.integration.worker.procs import started_consuming

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_blocking_async_handler_is_named_within_two_seconds(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    w = workers(amqp_url, HANDLER_SLEEP="3")
    start_target(w, "tests.faults.apps.blocking:app")
    await started_consuming(vhost)
    log = PublishLog()
    await publish_tracked(amqp_url, range(1), log)
    await until(lambda: len(w.started()) == 1, timeout=20, interval=0.02, message="start")
    began = time.monotonic()
    warned = await until(
        lambda: "event loop blocked" in w.output(),
        timeout=5,
        interval=0.05,
        message="the blocked-loop warning",
    )
    await until(lambda: len(w.done()) == 1, timeout=20, message="handled")
    assert w.stop() == 0
    line = next(x for x in w.output().splitlines() if "event loop blocked" in x)
    assert "blocks_the_loop" in line
    v = check(
        "async handler blocks the loop (time.sleep 3s)",
        log,
        w.ledger,
        await dead_letter_ids(amqp_url),
        warning_after_s=round(warned, 2),
    )
    v.record()
    assert time.monotonic() - began > warned
    assert warned < 3, "the warning comes while the loop is still blocked (3 s)"
    assert (v.lost, v.unexpected, v.duplicated) == (0, 0, 0)


async def test_sync_handler_longer_than_heartbeats_keeps_the_connection(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    """A plain def handler runs in a thread: 6 s of work with a 1 s heartbeat misses no
    heartbeat, so the connection stays and the message is handled once."""
    w = workers(
        amqp_url,
        HANDLER_SYNC="1",
        HANDLER_SLEEP="6",
        HANDLER_PREFETCH="2",
        RABBITFLOW_HEARTBEAT="1",
    )
    w.start()
    await started_consuming(vhost)
    log = PublishLog()
    await publish_tracked(amqp_url, range(2), log)
    await until(lambda: len(w.done()) == 2, timeout=30, message="handled")
    assert w.stop() == 0
    out = w.output()
    assert not re.search(r"connection lost|reconnect", out), out[-2000:]
    v = check("sync handler 6s, heartbeat 1s", log, w.ledger, await dead_letter_ids(amqp_url))
    v.record()
    assert (v.lost, v.unexpected, v.duplicated, v.redelivered) == (0, 0, 0, 0)
