"""Fixtures of the dashboard tests: the orders topology in the test's vhost, and the
dashboard served by uvicorn on a free port of 127.0.0.1 (in a thread of the test process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import pytest
from pydantic import SecretStr

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.dashboard.app import DashboardConfig
from rabbitflow.settings import Settings
from rabbitflow.topology import Topology, load_topology
from rabbitflow.topology.expand import expand
from tests.conftest import BROKER_HOST
from tests.integration.dashboard.helpers import Served, serve

ORDERS = "topologies/orders.yaml"
MANAGEMENT_URL = f"http://{BROKER_HOST}:15672"


@pytest.fixture
def orders() -> Topology:
    return load_topology([ORDERS])


@pytest.fixture
async def declared(amqp_url: str, orders: Topology) -> Topology:
    """The orders topology declared in the test's vhost."""
    connection = await connect(amqp_url)
    try:
        await declare(connection, expand(orders))
    finally:
        await connection.close()
    return orders


@pytest.fixture
def dashboard(amqp_url: str, declared: Topology) -> Iterator[Callable[..., Served]]:
    """Start dashboards on the orders topology: ``dashboard(token=..., read_only=...)``."""
    with_stack: list[Any] = []

    def start(
        token: str | None = None,
        read_only: bool = False,
        url: str | None = None,
        live: bool = False,
        **kw: Any,
    ) -> Served:
        settings = Settings(
            url=url or amqp_url,
            management_url=MANAGEMENT_URL,
            dashboard_token=SecretStr(token) if token else None,
            **kw,
        )
        cm = serve(DashboardConfig(settings, None if live else declared, read_only=read_only))
        with_stack.append(cm)
        return cm.__enter__()

    try:
        yield start
    finally:
        for cm in reversed(with_stack):
            cm.__exit__(None, None, None)


@pytest.fixture
async def publisher(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()
