"""Running ``rabbitflow run`` in subprocesses whose handler keeps a ledger file."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from tests.conftest import AMQP_PORT, BROKER_HOST
from tests.helpers import connections, consumer_count_of, wait_for

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

    def __init__(
        self, tmp_path: Path, amqp_url: str, topology_text: str = TOPOLOGY, **env: str
    ) -> None:
        self.ledger = tmp_path / "ledger.txt"
        self.ledger.touch()
        self.log = tmp_path / "worker.log"
        topology = tmp_path / "topology.yaml"
        topology.write_text(topology_text)
        self.env = {
            **os.environ,
            "TOPOLOGY": str(topology),
            "LEDGER": str(self.ledger),
            "RABBITFLOW_URL": amqp_url,
            "RABBITFLOW_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:  # a file, not a pipe: a full pipe would block it
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rabbitflow",
                    "run",
                    "tests.integration.worker.apps.ledger:app",
                    *args,
                ],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
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

    def make(topology: str = TOPOLOGY, **env: str) -> Worker:
        w = Worker(_dir(tmp_path, len(made)), amqp_url, topology, **env)
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


async def publish_ids(amqp_url: str, ids: range, queue: str = "jobs") -> None:
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            (Outgoing("", queue, {"id": i}) for i in ids), window=500
        )
    assert result.ok
    assert len(result.confirmed) == len(ids)


async def started_consuming(vhost: str, consumers: int = 1, queue: str = "jobs") -> None:
    """Wait until ``queue`` has this many consumers (a passive declare: exact, no lag)."""

    async def ready() -> bool:
        return await consumer_count(vhost, queue) == consumers

    await wait_for(ready, timeout=60, interval=0.1, message=f"{consumers} consumer(s)")


async def consumer_count(vhost: str, queue: str = "jobs") -> int:
    return await consumer_count_of(f"amqp://guest:guest@{BROKER_HOST}:{AMQP_PORT}/{vhost}", queue)


def worker_connected(vhost: str) -> bool:
    names = [c.get("client_properties", {}).get("connection_name") for c in connections(vhost)]
    return "rabbitflow-worker" in names
