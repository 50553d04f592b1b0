"""Faults of the worker process, on the shared broker (each test in its own vhost):
kill -9, a loop of kills, SIGTERM, connections closed under load, the queue deleted.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from tests.faults.conftest import DURATION, WorkerFactory
from tests.faults.harness import PublishLog, check, dead_letter_ids, publish_tracked, until
from tests.helpers import connections, message_count
from tests.integration.worker.procs import consumer_count, started_consuming

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_kill_9_mid_batch_then_restart(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    """Duplicates at most the prefetch; nothing confirmed is lost."""
    prefetch = 50
    w = workers(amqp_url, HANDLER_SLEEP="0.002", HANDLER_PREFETCH=str(prefetch))
    w.start()
    await started_consuming(vhost)
    log = PublishLog()
    await publish_tracked(amqp_url, range(3000), log)
    await until(lambda: len(w.done()) >= 800, timeout=60, message="800 handled")
    assert w.process is not None
    w.process.kill()
    w.process.wait()
    killed = time.monotonic()
    w.start()
    await started_consuming(vhost)
    recovery = time.monotonic() - killed
    await until(lambda: len(w.done()) == 3000, timeout=90, message="all handled")
    assert w.stop() == 0
    v = check(
        "kill -9 worker mid-batch",
        log,
        w.ledger,
        await dead_letter_ids(amqp_url),
        recovery_s=round(recovery, 2),
        bound=f"D<={prefetch}",
    )
    v.record()
    assert (v.lost, v.unexpected) == (0, 0)
    assert v.duplicated <= prefetch


async def test_kill_loop_across_three_workers(
    workers: WorkerFactory, amqp_url: str, vhost: str, tmp_path: Any
) -> None:
    """kill -9 a random one of 3 workers every ~2 s for DURATION seconds under load."""
    prefetch = 20
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    ws = [
        workers(amqp_url, ledger=ledger, HANDLER_SLEEP="0.005", HANDLER_PREFETCH=str(prefetch))
        for _ in range(3)
    ]
    for w in ws:
        w.start()
    await started_consuming(vhost, consumers=3)
    log = PublishLog()
    stop = asyncio.Event()
    publisher = asyncio.create_task(
        publish_tracked(amqp_url, range(10**7), log, window=50, pace=0.002, stop=stop)
    )
    kills = 0
    rng = random.Random(9)
    deadline = time.monotonic() + DURATION
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            victim = rng.choice(ws)
            assert victim.process is not None
            victim.process.kill()
            victim.process.wait()
            kills += 1
            victim.start()
    finally:
        stop.set()
        await asyncio.wait_for(publisher, 60)
    await started_consuming(vhost, consumers=3)
    done = {i for i, s in log.status.items() if s == "confirmed"}
    await until(
        lambda: done <= {int(k) for k in ws[0].done()},
        timeout=120,
        message="every confirmed message handled",
    )
    for w in ws:
        assert w.stop() == 0
    v = check(
        f"kill -9 loop, 3 workers, {DURATION:g}s",
        log,
        ledger,
        await dead_letter_ids(amqp_url),
        kills=kills,
        bound=f"D<={prefetch}*{kills}",
    )
    v.record()
    assert (v.lost, v.unexpected) == (0, 0)
    assert v.duplicated <= prefetch * kills
    assert await message_count_url(amqp_url, "jobs") == 0


async def message_count_url(url: str, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        return await message_count(await connection.channel(), queue)
    finally:
        await connection.close()


async def test_sigterm_within_grace(workers: WorkerFactory, amqp_url: str, vhost: str) -> None:
    """In-flight handlers finish and are acked; the rest stay queued; no dead letters."""
    w = workers(amqp_url, HANDLER_SLEEP="0.5", HANDLER_PREFETCH="10")
    w.start("--shutdown-timeout", "10")
    await started_consuming(vhost)
    log = PublishLog()
    await publish_tracked(amqp_url, range(100), log)
    await until(lambda: len(w.started()) >= 10, timeout=20, message="a batch started")
    began = time.monotonic()
    assert w.stop() == 0
    stop_s = time.monotonic() - began
    started, done = w.started(), w.done()
    assert set(started) == set(done)  # each started handler finished
    left = await message_count_url(amqp_url, "jobs")
    dead = await dead_letter_ids(amqp_url)
    # The rest is consumed by a second worker: nothing lost, nothing twice.
    w2 = workers(amqp_url, ledger=w.ledger, HANDLER_PREFETCH="10")
    w2.start()
    await until(lambda: len(w2.done()) == 100, timeout=30, message="rest handled")
    assert w2.stop() == 0
    v = check(
        "SIGTERM within grace",
        log,
        w.ledger,
        dead,
        stop_s=round(stop_s, 2),
        left_queued=left,
        bound="D=0, DLQ=0",
    )
    v.record()
    assert (v.lost, v.unexpected, v.duplicated, v.dead_lettered) == (0, 0, 0, 0)


async def test_sigterm_beyond_grace_requeues(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    """Handlers still running at the timeout are cancelled and requeued, not dead-lettered."""
    w = workers(amqp_url, HANDLER_SLEEP="30", HANDLER_PREFETCH="3")
    w.start("--shutdown-timeout", "0.5")
    await started_consuming(vhost)
    log = PublishLog()
    await publish_tracked(amqp_url, range(3), log)
    await until(lambda: len(w.started()) == 3, timeout=20, message="3 started")
    began = time.monotonic()
    assert w.stop() == 0
    stop_s = time.monotonic() - began
    assert not w.done()
    assert await message_count_url(amqp_url, "jobs") == 3
    dead = await dead_letter_ids(amqp_url)
    w2 = workers(amqp_url, ledger=w.ledger, HANDLER_PREFETCH="3")
    w2.start()
    await until(lambda: len(w2.done()) == 3, timeout=30, message="requeued ones handled")
    assert w2.stop() == 0
    v = check(
        "SIGTERM beyond grace",
        log,
        w.ledger,
        dead,
        stop_s=round(stop_s, 2),
        bound="requeued, DLQ=0",
    )
    v.record()
    assert (v.lost, v.unexpected, v.duplicated, v.dead_lettered) == (0, 0, 0, 0)
    assert stop_s < 10


async def test_connections_closed_repeatedly_under_load(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    """Every few seconds the broker closes the worker's connections while it consumes;
    afterwards one consumer on the queue and no leaked connections or channels."""
    prefetch = 20
    w = workers(amqp_url, HANDLER_SLEEP="0.003", HANDLER_PREFETCH=str(prefetch))
    w.start()
    await started_consuming(vhost)
    log = PublishLog()
    stop = asyncio.Event()
    publisher = asyncio.create_task(
        publish_tracked(amqp_url, range(10**7), log, window=50, pace=0.003, stop=stop)
    )
    closes, recoveries = 0, []
    deadline = time.monotonic() + DURATION
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(3)
            names = [c["client_properties"].get("connection_name") for c in connections(vhost)]
            if "rabbitflow-worker" not in names:
                continue
            closes += _close_worker_connections(vhost)
            began = time.monotonic()
            await asyncio.sleep(0.3)
            await started_consuming(vhost)
            recoveries.append(time.monotonic() - began + 0.3)
    finally:
        stop.set()
        await asyncio.wait_for(publisher, 60)
    confirmed = log.ids("confirmed")
    await until(
        lambda: confirmed <= {int(k) for k in w.done()},
        timeout=60,
        message="every confirmed message handled",
    )
    assert await consumer_count(vhost) == 1

    def settled() -> bool:
        conns = [
            c
            for c in connections(vhost)
            if c["client_properties"].get("connection_name") != "faults-publisher"
        ]
        return len(conns) <= 2 and sum(int(c.get("channels", 0)) for c in conns) <= 3

    def one_worker_connection() -> bool:
        # The management API lists a new connection after its next stats emission.
        return [c["client_properties"].get("connection_name") for c in connections(vhost)].count(
            "rabbitflow-worker"
        ) == 1

    await until(settled, timeout=20, interval=0.5, message="no leaked connections/channels")
    await until(one_worker_connection, timeout=20, interval=0.5, message="one worker conn")
    assert w.stop() == 0
    v = check(
        f"connections closed every 3s for {DURATION:g}s",
        log,
        w.ledger,
        await dead_letter_ids(amqp_url),
        closes=closes,
        recovery_max_s=round(max(recoveries, default=0), 2),
        bound=f"D<={prefetch}*{closes}",
    )
    v.record()
    assert closes >= 2
    assert (v.lost, v.unexpected) == (0, 0)
    assert v.duplicated <= prefetch * closes
    assert max(recoveries) < 10


def _close_worker_connections(vhost: str) -> int:
    """Close the worker's connections (not the test publisher's): the per-vhost
    equivalent of ``rabbitmqctl close_all_connections``, which would cut other tests."""
    import httpx

    from tests.helpers import AUTH, MANAGEMENT, quote

    closed = 0
    with httpx.Client(auth=AUTH, timeout=5) as api:
        for c in connections(vhost):
            if c["client_properties"].get("connection_name") == "faults-publisher":
                continue
            api.delete(
                f"{MANAGEMENT}/connections/{quote(c['name'])}",
                headers={"X-Reason": "faults: forced close"},
            )
            closed += 1
    return closed


async def test_queue_deleted_under_consumer(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    """The broker cancels the consumer: an error naming the queue at once, the queue
    redeclared, consumption resumed."""
    w = workers(amqp_url, HANDLER_PREFETCH="5")
    w.start()
    await started_consuming(vhost)
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        began = time.monotonic()
        await channel.queue_delete("jobs")
        await started_consuming(vhost)
        recovery = time.monotonic() - began
    finally:
        await connection.close()
    log = PublishLog()
    await publish_tracked(amqp_url, range(200), log)
    await until(lambda: len(w.done()) == 200, timeout=30, message="handled after redeclare")
    assert w.stop() == 0
    out = w.output()
    assert "consumer cancelled by the broker" in out
    assert "jobs" in out
    v = check(
        "work queue deleted under the consumer",
        log,
        w.ledger,
        await dead_letter_ids(amqp_url),
        recovery_s=round(recovery, 2),
    )
    v.record()
    assert (v.lost, v.unexpected, v.duplicated) == (0, 0, 0)


async def test_queue_deleted_with_exit_on_cancel(
    workers: WorkerFactory, amqp_url: str, vhost: str
) -> None:
    w = workers(amqp_url, HANDLER_PREFETCH="5")
    w.start("--exit-on-cancel")
    await started_consuming(vhost)
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        await (await connection.channel()).queue_delete("jobs")
    finally:
        await connection.close()
    assert w.process is not None
    assert w.process.wait(timeout=20) != 0
    assert "jobs" in w.output()
    assert "cancelled by the broker" in w.output()
