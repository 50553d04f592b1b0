"""The worker as a process: signals, kill -9, lost connections, several processes.

Each test runs ``rabbitflow run`` in a subprocess whose handler appends every delivery to
a ledger file, then checks the ledger against what was published: nothing lost, and
duplicates within the bound the scenario allows.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.helpers import close_connections, message_count, queue_info, wait_for
from tests.integration.worker.procs import (
    consumer_count,
    publish_ids,
    started_consuming,
    worker_connected,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_sigterm_lets_in_flight_handlers_finish(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    w = worker(HANDLER_SLEEP="1.0", HANDLER_PREFETCH="3")
    w.start("--shutdown-timeout", "5")
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(10))
    await wait_for(lambda: len(w.started()) == 3, timeout=10)
    assert w.stop() == 0
    assert sorted(w.done()) == sorted(w.started())  # each started handler finished
    assert all(n == 1 for n in w.done().values())
    # the rest were never started and are back in the queue; nothing was dead-lettered
    assert await message_count(channel, "jobs") == 10 - len(w.done())
    assert await message_count(channel, "jobs.dlq") == 0


async def test_sigterm_beyond_the_timeout_requeues(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    w = worker(HANDLER_SLEEP="30", HANDLER_PREFETCH="2")
    w.start("--shutdown-timeout", "0.5")
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(2))
    await wait_for(lambda: len(w.started()) == 2, timeout=10)
    began = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - began < 10
    assert not w.done()
    assert await message_count(channel, "jobs") == 2
    assert await message_count(channel, "jobs.dlq") == 0


async def test_kill_9_mid_batch_loses_nothing(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    """kill -9 with 2,000 messages: after a restart every message is handled, and
    duplicates are at most the prefetch."""
    prefetch = 50
    w = worker(HANDLER_SLEEP="0.002", HANDLER_PREFETCH=str(prefetch))
    w.start()
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(2000))
    await wait_for(lambda: len(w.done()) >= 500, timeout=30, interval=0.05)
    assert w.process is not None
    w.process.kill()
    w.process.wait()
    w.start()
    # The first worker may have finished every message before the kill landed (a loaded
    # machine): wait for the new one to consume, so stop() never meets a worker still
    # importing (which SIGTERM ends with -15, not a graceful 0).
    await started_consuming(vhost)
    await wait_for(
        lambda: len(w.done()) == 2000, timeout=60, interval=0.2, message="all 2000 handled"
    )
    assert w.stop() == 0
    done = w.done()
    duplicates = sum(n - 1 for n in done.values())
    assert set(done) == {str(i) for i in range(2000)}  # lost: 0
    assert duplicates <= prefetch, duplicates
    print(f"kill -9 mid-batch of 2000: lost 0, duplicates {duplicates} (bound {prefetch})")
    assert await message_count(channel, "jobs") == 0


async def test_survives_closed_connections(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    w = worker(HANDLER_SLEEP="0.005", HANDLER_PREFETCH="20")
    w.start()
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(600))
    await wait_for(lambda: len(w.done()) >= 100, timeout=20)
    await channel.close()
    recoveries = []
    for _ in range(2):
        await wait_for(
            lambda: worker_connected(vhost),
            timeout=20,
            interval=0.2,
            message="worker connection listed",
        )
        assert close_connections(vhost) >= 1
        began = time.monotonic()
        await asyncio.sleep(0.5)
        await started_consuming(vhost)
        recoveries.append(time.monotonic() - began)
    await wait_for(lambda: len(w.done()) == 600, timeout=30, interval=0.1)
    info_consumers = await consumer_count(vhost)
    assert w.stop() == 0
    assert info_consumers == 1  # no duplicate consumers after reconnecting
    assert set(w.done()) == {str(i) for i in range(600)}
    print(f"recovery after close: {[round(r, 2) for r in recoveries]} s")
    assert max(recoveries) < 10


async def test_prefetch_bounds_unacked_messages(worker: Any, amqp_url: str, vhost: str) -> None:
    w = worker(HANDLER_SLEEP="0.2", HANDLER_PREFETCH="5")
    w.start()
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(40))
    peak = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = w.lines()
        starts = collections.Counter(p[0] for p in lines if p[4] == "start")
        dones = collections.Counter(p[0] for p in lines if p[4] == "done")
        peak = max(peak, sum(starts.values()) - sum(dones.values()))
        unacked = queue_info(vhost, "jobs").get("messages_unacknowledged", 0)
        assert unacked <= 5
        await asyncio.sleep(0.05)
    assert w.stop() == 0
    assert peak == 5  # runs up to prefetch concurrently, never more


async def test_two_processes_share_one_queue(worker: Any, amqp_url: str, vhost: str) -> None:
    w = worker(HANDLER_SLEEP="0.01", HANDLER_PREFETCH="5")
    w.start("--processes", "2")
    await started_consuming(vhost, consumers=2)
    await publish_ids(amqp_url, range(300))
    await wait_for(lambda: len(w.done()) == 300, timeout=90, interval=0.1)
    pids = {p[3] for p in w.lines()}
    assert w.stop() == 0
    assert len(pids) == 2


async def test_supervisor_restarts_a_dead_child(worker: Any, amqp_url: str, vhost: str) -> None:
    w = worker(HANDLER_PREFETCH="5")
    w.start("--processes", "2")
    await started_consuming(vhost, consumers=2)
    pids = _child_pids(w.process.pid if w.process else 0)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    await wait_for(
        lambda: len(set(_child_pids(w.process.pid if w.process else 0)) - {pids[0]}) == 2,
        timeout=60,  # a new process imports everything again: seconds on a loaded machine
        interval=0.2,
        message="restart",
    )
    await started_consuming(vhost, consumers=2)
    assert w.stop() == 0


def _child_pids(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_deleted_queue_is_redeclared_and_consumed_again(
    worker: Any, amqp_url: str, vhost: str, channel: Any
) -> None:
    w = worker(HANDLER_PREFETCH="5")
    w.start()
    await started_consuming(vhost)
    await channel.queue_delete("jobs")
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(5))
    await wait_for(lambda: len(w.done()) == 5, timeout=20)
    assert w.stop() == 0
    assert "consumer cancelled by the broker" in w.output()


async def test_deleted_queue_with_exit_on_cancel_exits_non_zero(
    worker: Any, vhost: str, channel: Any
) -> None:
    w = worker(HANDLER_PREFETCH="5")
    w.start("--exit-on-cancel")
    await started_consuming(vhost)
    await channel.queue_delete("jobs")
    assert w.process is not None
    assert w.process.wait(timeout=20) == 1
    assert "cancelled by the broker" in w.output()


async def test_run_refuses_a_topology_that_conflicts_with_the_broker(
    worker: Any, vhost: str, channel: Any
) -> None:
    await channel.declare_queue("jobs", durable=True)  # classic; the file says quorum
    w = worker()
    w.start()
    assert w.process is not None
    assert w.process.wait(timeout=30) == 1
    out = w.output()
    # the broker names the first argument that differs
    assert f"error: vhost {vhost!r}: queue 'jobs' exists with x-" in out
    assert "connection lost" not in out
    assert "Traceback" not in out


async def test_run_with_the_broker_down_fails_fast_with_one_line(worker: Any) -> None:
    w = worker(RABBITFLOW_URL="amqp://guest:s3cret@127.0.0.1:1/")
    w.start()
    assert w.process is not None
    assert w.process.wait(timeout=30) == 1
    out = w.output()
    assert "error: cannot connect to RabbitMQ" in out
    assert "s3cret" not in out
    assert "Traceback" not in out
