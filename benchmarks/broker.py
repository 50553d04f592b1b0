"""The harness's side of the broker: vhosts through the management API, queues, filling.

Nothing here is measured: it prepares a fresh vhost and queue for each run and checks
afterwards that every message was acked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import aiormq
import httpx
from pamqp.commands import Basic

from benchmarks.workers.common import make_body

HOST = "127.0.0.1"
MANAGEMENT = f"http://{HOST}:15672/api"
AUTH = ("guest", "guest")


def amqp_url(vhost: str) -> str:
    """The AMQP URL of a vhost on the local broker."""
    return f"amqp://guest:guest@{HOST}:5672/{quote(vhost, safe='')}"


@contextmanager
def fresh_vhost(prefix: str = "rf-bench") -> Iterator[str]:
    """A new vhost with full rights for guest, deleted afterwards whatever happens."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    quoted = quote(name, safe="")
    with httpx.Client(base_url=MANAGEMENT, auth=AUTH, timeout=30) as api:
        api.put(f"/vhosts/{quoted}").raise_for_status()
        try:
            api.put(
                f"/permissions/{quoted}/guest",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
            yield name
        finally:
            api.delete(f"/vhosts/{quoted}")


def broker_version() -> str:
    """The RabbitMQ version, for the results file."""
    with httpx.Client(base_url=MANAGEMENT, auth=AUTH, timeout=10) as api:
        overview = api.get("/overview").json()
    return f"RabbitMQ {overview.get('rabbitmq_version')}, Erlang {overview.get('erlang_version')}"


async def declare(url: str, queues: Mapping[str, Mapping[str, Any]]) -> None:
    """Declare durable queues with the given arguments."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name, arguments in queues.items():
            await channel.queue_declare(name, durable=True, arguments=dict(arguments))
    finally:
        await connection.close()


def fill_parallel(url: str, exchange: str, count: int, processes: int = 2) -> None:
    """`fill` from several processes at once: the publisher, not the broker, is the limit."""
    if count < 100_000:
        asyncio.run(fill(url, exchange, count))
        return
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        for f in [pool.submit(_fill_sync, url, exchange, n) for n in shares]:
            f.result()


def _fill_sync(url: str, exchange: str, count: int) -> None:
    asyncio.run(fill(url, exchange, count))


async def fill(url: str, exchange: str, count: int, window: int = 5000) -> None:
    """Publish ``count`` persistent ~200-byte JSON messages to ``exchange``, pipelining
    confirms (at most ``window`` unconfirmed)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        props = Basic.Properties(delivery_mode=2, content_type="application/json")
        body = make_body(0)
        pending: list[asyncio.Future[Any]] = []
        for _ in range(count):
            pending.append(
                asyncio.ensure_future(
                    channel.basic_publish(body, exchange=exchange, properties=props)
                )
            )
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await connection.close()


async def depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (unacked ones went back when their consumer left)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await connection.close()


async def bind_fanout(url: str, exchange: str, queues: list[str]) -> None:
    """A fanout exchange feeding every queue, so one fill serves every implementation."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(exchange, exchange_type="fanout", durable=True)
        for queue in queues:
            await channel.queue_bind(queue, exchange)
    finally:
        await connection.close()


async def declare_topology(url: str, path: str) -> None:
    """Declare what rabbitflow would declare for a topology file, so the harness can fill
    its queues first and the app's own declaration finds them identical."""
    from rabbitflow.topology import load_topology
    from rabbitflow.topology.expand import expand

    decl = expand(load_topology([path]))
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for ex in decl.exchanges:
            await channel.exchange_declare(
                ex.name,
                exchange_type=ex.type,
                durable=ex.durable,
                auto_delete=ex.auto_delete,
                internal=ex.internal,
                arguments=dict(ex.arguments),
            )
        for q in decl.queues:
            await channel.queue_declare(
                q.name,
                durable=q.durable,
                exclusive=q.exclusive,
                auto_delete=q.auto_delete,
                arguments=dict(q.arguments),
            )
        for b in decl.bindings:
            if b.destination_type == "queue":
                await channel.queue_bind(
                    b.destination, b.source, routing_key=b.routing_key, arguments=dict(b.arguments)
                )
            else:
                await channel.exchange_bind(
                    b.destination, b.source, routing_key=b.routing_key, arguments=dict(b.arguments)
                )
    finally:
        await connection.close()
