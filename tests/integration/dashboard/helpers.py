"""Helpers of the dashboard tests: serve the app, publish dead letters, read depths."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import uvicorn
from starlette.applications import Starlette

from rabbitflow.dashboard.app import DashboardConfig, create_app

FAILED_AT = "2026-12-01T08:00:00+00:00"


@dataclass
class Served:
    """A dashboard running on ``url``."""

    url: str
    app: Starlette


@contextmanager
def serve(config: DashboardConfig) -> Iterator[Served]:
    """Run the dashboard with uvicorn on a free port until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "dashboard did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def dead_letters(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    errors: list[str],
    *,
    start: int = 0,
    headers: dict[str, Any] | None = None,
) -> list[str]:
    """Publish dead letters the way the worker does (to Q.dlx, with the §2 headers);
    return their message ids."""
    exchange = await channel.get_exchange(f"{queue}.dlx")
    ids = []
    sends = []
    for i, error in enumerate(errors, start):
        message_id = f"dl-{i:05d}"
        ids.append(message_id)
        sends.append(
            exchange.publish(
                aio_pika.Message(
                    json.dumps({"order_id": f"A-{i}"}).encode(),
                    headers={
                        "x-rabbitflow-attempt": 5,
                        "x-rabbitflow-queue": queue,
                        "x-rabbitflow-error": error,
                        "x-rabbitflow-failed-at": FAILED_AT,
                        "x-rabbitflow-original-exchange": "orders",
                        "x-rabbitflow-original-routing-key": "order.placed",
                        "x-rabbitflow-traceback": f"Traceback (most recent call last):\n  {error}",
                        "tenant": f"t{i % 2}",
                        **(headers or {}),
                    },
                    message_id=message_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )
        )
        if len(sends) >= 500:
            await asyncio.gather(*sends)
            sends = []
    await asyncio.gather(*sends)
    return ids


async def depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def wait_depth(channel: aio_pika.abc.AbstractChannel, queue: str, expected: int) -> None:
    """Dead-lettering is asynchronous in the broker: wait (bounded) for the count."""
    for _ in range(500):
        if await depth(channel, queue) == expected:
            return
        await asyncio.sleep(0.02)
    assert await depth(channel, queue) == expected
