"""Fixtures of the operations tests (helpers in `ops_helpers`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ops_helpers import DATA, Result, declare_topology, run_cli

from rabbitflow.topology import Topology, load_topology


@pytest.fixture
def cli(amqp_url: str) -> Callable[..., Result]:
    """Run ``rabbitflow ARGS...`` in a subprocess against the test's vhost."""

    def run(*args: str, **kwargs: Any) -> Result:
        return run_cli(amqp_url, *args, **kwargs)

    return run


@pytest.fixture
def declare(amqp_url: str) -> Callable[[str | Topology], Awaitable[Topology]]:
    """Declare a topology (a file under tests/data/ops, or a `Topology`) in the vhost."""

    async def run(source: str | Topology) -> Topology:
        topology = source if isinstance(source, Topology) else load_topology(DATA / source)
        await declare_topology(amqp_url, topology)
        return topology

    return run
