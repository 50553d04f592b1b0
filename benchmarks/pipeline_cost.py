"""``python -m benchmarks.pipeline_cost``: the worker's own cost per delivery, in process,
on the in-memory broker (no network, no other process): CPU seconds to drain a backlog
with a pydantic handler, without and with one no-op middleware.

On a shared machine the wall-clock figures of ``python -m benchmarks`` move by 2x from
one run to the next; CPU time of one process moves far less, which is what a claim such
as "one no-op middleware costs at most 10 %" needs. Run it on two trees to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from pydantic import BaseModel

from rabbitflow import App
from rabbitflow.topology import load_text


class Order(BaseModel):
    id: int
    sku: str
    quantity: int
    price: float


async def drain(count: int, prefetch: int, middleware: bool) -> float:
    """CPU seconds from the first delivery to the last handled message."""
    import rabbitflow.testing.memory as memory

    broker = memory.register(memory.MemoryBroker(f"cost-{uuid.uuid4().hex[:8]}"))
    url = f"memory://{broker.name}"
    app = App(load_text("version: 1\nqueues:\n  work: {}\n"), url=url)
    done = asyncio.Event()
    seen = 0
    first: list[float] = []

    if middleware:

        @app.middleware
        async def noop(message, call_next):  # type: ignore[no-untyped-def]
            return await call_next(message)

    @app.handler("work", prefetch=prefetch)
    async def handle(order: Order) -> None:
        nonlocal seen
        if not first:
            first.append(time.process_time())
        seen += 1
        if seen == count:
            done.set()

    body = json.dumps({"id": 1, "sku": "A-1", "quantity": 2, "price": 9.5}).encode()
    from pamqp.commands import Basic

    props = Basic.Properties(content_type="application/json", delivery_mode=2)
    async with app:
        # Synchronous: no delivery runs before the whole backlog is in the queue.
        for _ in range(count):
            broker.publish("", "work", body, props)
        await asyncio.wait_for(done.wait(), 120)
        spent = time.process_time() - first[0]
    memory.unregister(broker)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--prefetch", default="100,1000")
    parser.add_argument(
        "--without-middleware-only",
        action="store_true",
        help="only the plain handler (a tree older than @app.middleware)",
    )
    args = parser.parse_args()
    out = {}
    for prefetch in (int(p) for p in args.prefetch.split(",")):
        for middleware in (False,) if args.without_middleware_only else (False, True):
            runs = [
                asyncio.run(drain(args.count, prefetch, middleware))
                for _ in range(args.repetitions)
            ]
            per = statistics.median(runs) / args.count * 1e6
            key = f"prefetch {prefetch}{' + 1 no-op middleware' if middleware else ''}"
            out[key] = round(per, 2)
            print(f"{key}: {per:.2f} µs CPU per message (median of {args.repetitions})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
