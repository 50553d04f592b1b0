"""``python -m benchmarks.profile_consume``: where a rabbitflow consumer's CPU goes, on the
real broker, by package.

Fills a queue in a vhost of its own (management API, guest/guest on 127.0.0.1), drains it
with one handler kind — ``at_least_once`` (the default), ``at_most_once`` or ``batch``
(``Batch(100, 50ms)``) — taking a pydantic model, and prints msg/s and CPU µs per
message. With ``--profile`` it runs under cProfile (several times slower) and prints the
share of the CPU spent in aiormq and pamqp (reading frames), asyncio, rabbitflow, and
pydantic, then the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
import uuid
from collections import defaultdict

import aio_pika
import httpx
from pydantic import BaseModel

from rabbitflow import App, Batch
from rabbitflow.topology import load_text

MANAGEMENT = "http://127.0.0.1:15672/api"


class Order(BaseModel):
    id: int
    sku: str
    quantity: int
    price: float


async def fill(url: str, count: int) -> None:
    body = json.dumps({"id": 1, "sku": "A-1", "quantity": 2, "price": 9.5}).encode()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("work", durable=True)
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, content_type="application/json"), "work"
                    )
                    for _ in range(min(500, count - start))
                )
            )


async def drain(url: str, kind: str, count: int, profile: cProfile.Profile | None) -> None:
    app = App(load_text("version: 1\nqueues:\n  work: {}\n"), url=url)
    done = asyncio.Event()
    seen = 0
    first: list[float] = []

    def hit(n: int) -> None:
        nonlocal seen
        if not first:
            first.extend((time.perf_counter(), time.process_time()))
        seen += n
        if seen >= count:
            done.set()

    if kind == "batch":

        @app.handler("work", batch=Batch(max_size=100, max_wait="50ms"), prefetch=200)
        async def handle_batch(orders: list[Order]) -> None:
            hit(len(orders))

    else:

        @app.handler("work", prefetch=100, delivery=kind)
        async def handle(order: Order) -> None:
            hit(1)

    async with app:
        if profile is not None:
            profile.enable()
        await asyncio.wait_for(done.wait(), 300)
        if profile is not None:
            profile.disable()
        wall, cpu = time.perf_counter() - first[0], time.process_time() - first[1]
    print(f"{kind}: {count / wall:,.0f} msg/s, {cpu / count * 1e6:.1f} µs CPU per message")


def shares(stats: pstats.Stats) -> dict[str, float]:
    """Own time by package (aiormq and pamqp, asyncio, rabbitflow, pydantic, other)."""
    by: dict[str, float] = defaultdict(float)
    for (path, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = "other"
        for marker, name in (
            ("/aiormq/", "aiormq + pamqp"),
            ("/pamqp/", "aiormq + pamqp"),
            ("/asyncio/", "asyncio"),
            ("/rabbitflow/", "rabbitflow"),
            ("pydantic", "pydantic"),
        ):
            if marker in path:
                key = name
                break
        by[key] += tottime
    total = sum(by.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}


async def main(kind: str, count: int, profiled: bool) -> None:
    vhost = f"profile-{uuid.uuid4().hex[:8]}"
    auth = ("guest", "guest")
    async with httpx.AsyncClient(base_url=MANAGEMENT, auth=auth, timeout=10) as api:
        (await api.put(f"/vhosts/{vhost}")).raise_for_status()
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        (await api.put(f"/permissions/{vhost}/guest", json=everything)).raise_for_status()
        try:
            url = f"amqp://guest:guest@127.0.0.1/{vhost}"
            await fill(url, count)
            profile = cProfile.Profile() if profiled else None
            await drain(url, kind, count, profile)
            if profile is not None:
                stats = pstats.Stats(profile)
                print("own CPU time by package (%):", json.dumps(shares(stats)))
                stats.sort_stats("tottime").print_stats(20)
        finally:
            await api.delete(f"/vhosts/{vhost}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--kind", choices=("at_least_once", "at_most_once", "batch"), default="at_least_once"
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.kind, args.count, args.profile))
