"""Test helpers shared by the integration tests: bounded waits and broker inspection."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

MANAGEMENT = (
    f"http://{os.environ.get('RABBITFLOW_TEST_HOST', '127.0.0.1')}:"
    f"{os.environ.get('RABBITFLOW_TEST_MANAGEMENT_PORT', '15672')}/api"
)
AUTH = ("guest", "guest")


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def queue_info(vhost: str, queue: str) -> dict[str, Any]:
    """The management API's view of a queue (counts lag by a few seconds); {} if absent."""
    with httpx.Client(auth=AUTH, timeout=5) as api:
        r = api.get(f"{MANAGEMENT}/queues/{quote(vhost)}/{quote(queue)}")
        if r.status_code == 404:
            return {}
        r.raise_for_status()
        return dict(r.json())


def connections(vhost: str) -> list[dict[str, Any]]:
    with httpx.Client(auth=AUTH, timeout=5) as api:
        r = api.get(f"{MANAGEMENT}/vhosts/{quote(vhost)}/connections")
        r.raise_for_status()
        return list(r.json())


def close_connections(vhost: str) -> int:
    """Close every client connection of a vhost, as `rabbitmqctl close_all_connections`
    does for the whole broker (which would also cut other tests' connections)."""
    closed = 0
    with httpx.Client(auth=AUTH, timeout=5) as api:
        for c in connections(vhost):
            api.delete(
                f"{MANAGEMENT}/connections/{quote(c['name'])}",
                headers={"X-Reason": "test: forced close"},
            )
            closed += 1
    return closed


async def message_count(channel: Any, queue: str) -> int:
    """Ready messages in ``queue``, exact (a passive declare)."""
    q = await channel.declare_queue(queue, passive=True)
    return int(q.declaration_result.message_count)


async def drain(channel: Any, queue: str, limit: int = 10_000) -> list[Any]:
    """Get and ack every ready message of ``queue``."""
    out = []
    q = await channel.get_queue(queue, ensure=False)
    for _ in range(limit):
        m = await q.get(fail=False, no_ack=True)
        if m is None:
            break
        out.append(m)
    return out


async def consumer_count_of(amqp_url: str, queue: str) -> int:
    """Consumers of ``queue`` right now (passive declare); -1 when it does not exist."""
    import aio_pika
    import aiormq

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.consumer_count)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return -1
    finally:
        await connection.close()
