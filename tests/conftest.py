"""Shared fixtures: every broker test gets its own vhost on the local RabbitMQ."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

BROKER_HOST = os.environ.get("RABBITFLOW_TEST_HOST", "127.0.0.1")
# Another broker (e.g. a node of one's own while the shared one is down) with these two.
AMQP_PORT = int(os.environ.get("RABBITFLOW_TEST_PORT", "5672"))
BROKER_PORT = AMQP_PORT
MANAGEMENT_PORT = int(os.environ.get("RABBITFLOW_TEST_MANAGEMENT_PORT", "15672"))
MANAGEMENT = f"http://{BROKER_HOST}:{MANAGEMENT_PORT}/api"
AUTH = ("guest", "guest")


def _management() -> httpx.Client:
    return httpx.Client(base_url=MANAGEMENT, auth=AUTH, timeout=10)


def create_vhost(name: str) -> None:
    """Create a vhost and give guest every permission on it."""
    quoted = httpx.URL(f"/{name}").raw_path.decode()[1:]
    with _management() as api:
        api.put(f"/vhosts/{quoted}").raise_for_status()
        api.put(
            f"/permissions/{quoted}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
        ).raise_for_status()


def delete_vhost(name: str) -> None:
    quoted = httpx.URL(f"/{name}").raw_path.decode()[1:]
    with _management() as api:
        api.delete(f"/vhosts/{quoted}")


@pytest.fixture
def vhost() -> Iterator[str]:
    """A fresh vhost for one test, deleted afterwards even when the test fails."""
    name = f"rf-test-{uuid.uuid4().hex[:12]}"
    create_vhost(name)
    try:
        yield name
    finally:
        delete_vhost(name)


@pytest.fixture
def amqp_url(vhost: str) -> str:
    """The AMQP URL of the test's own vhost."""
    return f"amqp://guest:guest@{BROKER_HOST}:{AMQP_PORT}/{vhost}"


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[object]:
    """A plain aio-pika channel (publisher confirms on) on the test's vhost."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """`App.start` configures structlog once per process; give every test a clean slate so
    one test's configuration (its level) never hides another test's log events."""
    yield
    import structlog

    structlog.reset_defaults()
