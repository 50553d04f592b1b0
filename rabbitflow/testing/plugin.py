"""rabbitflow's pytest plugin (entry point ``pytest11``), loaded when rabbitflow is
installed.

Fixtures:
    rabbitflow_topology: override it to return the topology the vhost fixtures declare
        (a file, a list of files or a `Topology`); None by default.
    rabbitflow_vhost: a fresh vhost per test on a real broker (a `VirtualHost` with its
        ``url``), the topology declared, deleted afterwards even when the test fails.
    rabbitflow_module_vhost: the same, shared by the tests of a module.
    memory_broker: a fresh in-memory broker per test (`MemoryBroker`).
    memory_url: its ``memory://NAME`` URL.

Options: ``--rabbitflow-url`` (else ``RABBITFLOW_TEST_URL``, else
``amqp://guest:guest@127.0.0.1:5672/``) and ``--rabbitflow-management-url`` (else
``RABBITFLOW_TEST_MANAGEMENT_URL``, else ``http://127.0.0.1:15672``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rabbitflow.testing.memory import MemoryBroker
    from rabbitflow.testing.vhost import TopologyArg, VirtualHost

# pytest loads this plugin into every test run of every project that installs rabbitflow:
# the broker, the harness and aio-pika are imported by the fixtures that use them, never
# at collection (tests/unit/test_layers.py holds that).

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:15672"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rabbitflow")
    group.addoption(
        "--rabbitflow-url",
        default=None,
        help="AMQP URL of the broker for rabbitflow_vhost "
        "(default: RABBITFLOW_TEST_URL or the local broker)",
    )
    group.addoption(
        "--rabbitflow-management-url",
        default=None,
        help="management API of that broker (default: "
        "RABBITFLOW_TEST_MANAGEMENT_URL or http://127.0.0.1:15672)",
    )


def _urls(config: pytest.Config) -> tuple[str, str]:
    # The plugin reads its own test settings; rabbitflow's Settings stay the app's.
    amqp = (
        config.getoption("--rabbitflow-url") or os.environ.get("RABBITFLOW_TEST_URL") or DEFAULT_URL
    )
    management = (
        config.getoption("--rabbitflow-management-url")
        or os.environ.get("RABBITFLOW_TEST_MANAGEMENT_URL")
        or DEFAULT_MANAGEMENT_URL
    )
    return str(amqp), str(management)


@pytest.fixture
def rabbitflow_topology() -> TopologyArg:
    """The topology the vhost fixtures declare; override to return yours."""
    return None


@pytest.fixture
def rabbitflow_vhost(
    request: pytest.FixtureRequest, rabbitflow_topology: TopologyArg
) -> Iterator[VirtualHost]:
    """A fresh vhost for one test, with the topology declared; deleted afterwards."""
    from rabbitflow.testing.vhost import temporary_vhost

    amqp, management = _urls(request.config)
    with temporary_vhost(amqp, management, topology=rabbitflow_topology) as vhost:
        yield vhost


@pytest.fixture(scope="module")
def rabbitflow_module_vhost(request: pytest.FixtureRequest) -> Iterator[VirtualHost]:
    """A fresh vhost shared by a module's tests. Its topology comes from the module's
    ``RABBITFLOW_TOPOLOGY`` attribute, if any (a module fixture cannot use the
    function-scoped ``rabbitflow_topology``)."""
    from rabbitflow.testing.vhost import temporary_vhost

    amqp, management = _urls(request.config)
    topology = getattr(request.module, "RABBITFLOW_TOPOLOGY", None)
    with temporary_vhost(amqp, management, topology=topology) as vhost:
        yield vhost


@pytest.fixture
def memory_broker() -> Iterator[MemoryBroker]:
    """A fresh in-memory broker, reachable as ``memory_url`` while the test runs."""
    from rabbitflow.testing.memory import MemoryBroker, register, unregister

    broker = register(MemoryBroker(f"test-{uuid.uuid4().hex[:12]}"))
    try:
        yield broker
    finally:
        unregister(broker)


@pytest.fixture
def memory_url(memory_broker: MemoryBroker) -> str:
    """The ``memory://`` URL of the test's in-memory broker."""
    return f"memory://{memory_broker.name}"
