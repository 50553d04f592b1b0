"""Fixtures of the fault tier: our own RabbitMQ node(s), vhosts on them, worker processes.

Scenarios that only kill or signal *workers* run against the shared broker (each in its
own vhost). Scenarios that stop, kill, pause or reconfigure a *broker* run against nodes
started here, never against the shared one on :5672.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.nodes import Node
from tests.faults.tls import make_certificates
from tests.integration.worker.procs import TOPOLOGY, Worker

CONSUMER_TIMEOUT_MS = 4000
"""The fault node's consumer_timeout: low, so a slow handler overruns it within a test."""
DURATION = float(os.environ.get("RABBITFLOW_FAULTS_DURATION", "20"))
"""Seconds the repeated-fault loops run (the issue asks for a minute; CI default 20 s)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    """A single RabbitMQ node of our own (port 5680, TLS on 5690), with a low
    consumer_timeout checked every half second."""
    n = Node(0)
    n.stop()  # a node left over by an interrupted run
    n.prepare()
    certs = make_certificates(n.dir / "tls")
    n.conf = (
        f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n"
        f"listeners.ssl.1 = 127.0.0.1:{n.tls_port}\n"
        f"ssl_options.cacertfile = {certs.ca}\n"
        f"ssl_options.certfile = {certs.cert}\n"
        f"ssl_options.keyfile = {certs.key}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
    # The broker checks consumer timeouts on its channel tick (a minute by default).
    n.advanced = "[{rabbit, [{channel_tick_interval, 500}]}]."
    n.prepare(fresh=False)
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def live_node(node: Node) -> Node:
    """The node, restarted first if an earlier scenario left it down or paused."""
    node.resume()
    if node.pid() is None:
        node.start()
    with contextlib.suppress(Exception):
        node.ctl("start_app", timeout=60)
    return node


@pytest.fixture
def node_vhost(live_node: Node) -> Iterator[str]:
    name = f"rf-fault-{uuid.uuid4().hex[:10]}"
    live_node.add_vhost(name)
    try:
        yield name
    finally:
        live_node.resume()
        if live_node.pid() is None:
            live_node.start()
        live_node.delete_vhost(name)


@pytest.fixture
def node_url(live_node: Node, node_vhost: str) -> str:
    return live_node.url(node_vhost)


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Make ``rabbitflow run`` subprocesses with ledgers; all killed at the end."""
    made: list[Worker] = []

    def make(url: str, topology: str = TOPOLOGY, ledger: Path | None = None, **env: str) -> Worker:
        d = tmp_path / f"w{len(made)}"
        d.mkdir()
        w = Worker(d, url, topology, **env)
        if ledger is not None:
            w.ledger = ledger
            w.env["LEDGER"] = str(ledger)
        made.append(w)
        return w

    yield make
    for w in made:
        if w.process is not None and w.process.poll() is None:
            w.process.kill()
            w.process.wait()


def worker_output(w: Any) -> str:
    return str(w.output())


def start_target(w: Worker, target: str, *args: str) -> None:
    """Start ``rabbitflow run TARGET`` for a worker made by `workers` (another app than
    the ledger worker)."""
    import subprocess
    import sys

    from tests.integration.worker.procs import ROOT

    with w.log.open("ab") as log:
        w.process = subprocess.Popen(
            [sys.executable, "-m", "rabbitflow", "run", target, *args],
            env=w.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
