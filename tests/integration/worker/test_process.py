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
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from tests.helpers import (
    close_connections,
    connections,
    consumer_count_of,
    message_count,
    queue_info,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOPOLOGY = """
version: 1
queues:
  jobs:
    type: quorum
    retry: {max_retries: 2, delay: 100ms}
"""
ROOT = Path(__file__).resolve().parents[3]


class Worker:
    """A ``rabbitflow run`` subprocess and its ledger."""

    def __init__(self, tmp_path: Path, amqp_url: str, **env: str) -> None:
        self.ledger = tmp_path / "ledger.txt"
        self.ledger.touch()
        self.log = tmp_path / "worker.log"
        topology = tmp_path / "topology.yaml"
        topology.write_text(TOPOLOGY)
        self.env = {**os.environ, "TOPOLOGY": str(topology), "LEDGER": str(self.ledger),
                    "RABBITFLOW_URL": amqp_url, "RABBITFLOW_LOG_FORMAT": "json",
                    "PYTHONPATH": str(ROOT), **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:  # a file, not a pipe: a full pipe would block it
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rabbitflow", "run",
                 "tests.integration.worker.apps.ledger:app", *args],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self.process

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.ledger.read_text().splitlines() if line]

    def done(self) -> collections.Counter[str]:
        return collections.Counter(p[0] for p in self.lines() if p[4] == "done")

    def started(self) -> collections.Counter[str]:
        return collections.Counter(p[0] for p in self.lines() if p[4] == "start")

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def worker(tmp_path: Path, amqp_url: str) -> Iterator[Any]:
    made: list[Worker] = []

    def make(**env: str) -> Worker:
        w = Worker(_dir(tmp_path, len(made)), amqp_url, **env)
        made.append(w)
        return w

    yield make
    for w in made:
        if w.process is not None and w.process.poll() is None:
            w.process.kill()
            w.process.wait()


def _dir(tmp_path: Path, n: int) -> Path:
    d = tmp_path / f"w{n}"
    d.mkdir()
    return d


async def publish_ids(amqp_url: str, ids: range) -> None:
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            (Outgoing("", "jobs", {"id": i}) for i in ids), window=500)
    assert result.ok
    assert len(result.confirmed) == len(ids)


async def started_consuming(vhost: str, consumers: int = 1) -> None:
    """Wait until ``jobs`` has this many consumers (a passive declare: exact, no lag)."""

    async def ready() -> bool:
        return await consumer_count(vhost) == consumers

    await wait_for(ready, timeout=20, interval=0.1, message=f"{consumers} consumer(s)")


async def test_sigterm_lets_in_flight_handlers_finish(worker: Any, amqp_url: str, vhost: str,
                                                      channel: Any) -> None:
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


async def test_sigterm_beyond_the_timeout_requeues(worker: Any, amqp_url: str, vhost: str,
                                                   channel: Any) -> None:
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


async def test_kill_9_mid_batch_loses_nothing(worker: Any, amqp_url: str, vhost: str,
                                              channel: Any) -> None:
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
    await wait_for(lambda: len(w.done()) == 2000, timeout=60, interval=0.2,
                   message="all 2000 handled")
    assert w.stop() == 0
    done = w.done()
    duplicates = sum(n - 1 for n in done.values())
    assert set(done) == {str(i) for i in range(2000)}  # lost: 0
    assert duplicates <= prefetch, duplicates
    assert await message_count(channel, "jobs") == 0


async def test_survives_closed_connections(worker: Any, amqp_url: str, vhost: str,
                                           channel: Any) -> None:
    w = worker(HANDLER_SLEEP="0.005", HANDLER_PREFETCH="20")
    w.start()
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(600))
    await wait_for(lambda: len(w.done()) >= 100, timeout=20)
    await channel.close()
    recoveries = []
    for _ in range(2):
        await wait_for(lambda: _worker_connected(vhost), timeout=20, interval=0.2,
                       message="worker connection listed")
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


async def consumer_count(vhost: str) -> int:
    return await consumer_count_of(f"amqp://guest:guest@127.0.0.1:5672/{vhost}", "jobs")


def _worker_connected(vhost: str) -> bool:
    names = [c.get("client_properties", {}).get("connection_name") for c in connections(vhost)]
    return "rabbitflow-worker" in names


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
    await wait_for(lambda: len(w.done()) == 300, timeout=30, interval=0.1)
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
    await wait_for(lambda: len(set(_child_pids(w.process.pid if w.process else 0)) - {pids[0]})
                   == 2, timeout=20, interval=0.2, message="restart")
    await started_consuming(vhost, consumers=2)
    assert w.stop() == 0


def _child_pids(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_deleted_queue_is_redeclared_and_consumed_again(worker: Any, amqp_url: str,
                                                               vhost: str, channel: Any) -> None:
    w = worker(HANDLER_PREFETCH="5")
    w.start()
    await started_consuming(vhost)
    await channel.queue_delete("jobs")
    await started_consuming(vhost)
    await publish_ids(amqp_url, range(5))
    await wait_for(lambda: len(w.done()) == 5, timeout=20)
    assert w.stop() == 0
    assert "consumer cancelled by the broker" in w.output()


async def test_deleted_queue_with_exit_on_cancel_exits_non_zero(worker: Any, vhost: str,
                                                                channel: Any) -> None:
    w = worker(HANDLER_PREFETCH="5")
    w.start("--exit-on-cancel")
    await started_consuming(vhost)
    await channel.queue_delete("jobs")
    assert w.process is not None
    assert w.process.wait(timeout=20) == 1
    assert "cancelled by the broker" in w.output()
