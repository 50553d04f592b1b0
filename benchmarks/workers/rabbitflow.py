"""rabbitflow through its public API only (DESIGN.md §2): ``App``, ``@app.handler``,
``async with app``, ``await app.publish``. The harness writes a small topology file for it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aio_pika

from benchmarks.workers.aiopika import wait_for_depth
from benchmarks.workers.common import Counter, Order, Spec, bodies, emit, publish_all, ready, run

try:
    from rabbitflow import App, Batch, Message, SQLiteOffsets
except ImportError as exc:  # the worker runtime has not landed yet
    emit({"unavailable": f"cannot import rabbitflow.App: {exc}"})
    raise SystemExit(3) from None


async def consume(spec: Spec, *, middleware: bool = False) -> dict[str, Any]:
    """Drain ``spec.count`` messages with a handler taking a pydantic model (and, with
    ``middleware``, one no-op ``@app.middleware`` around it)."""
    app = App(topology=spec.topology, url=spec.url)
    counter = Counter(spec.count)
    if middleware:

        @app.middleware
        async def noop(message: Message, call_next: Any) -> Any:
            return await call_next(message)

    if spec.scenario == "latency":

        @app.handler(spec.queue, prefetch=spec.prefetch)
        async def handle_latency(order: Order) -> None:
            counter.hit_latency(order.ts)

    elif spec.scenario == "batch":

        @app.handler(spec.queue, batch=Batch(max_size=spec.prefetch, max_wait="50ms"))
        async def handle_batch(orders: list[Order]) -> None:
            counter.start()
            for _ in orders:
                counter.hit()

    elif spec.scenario == "stream":
        offsets = SQLiteOffsets(Path(spec.topology).with_name("offsets.db"))

        @app.handler(
            spec.queue,
            prefetch=spec.prefetch,
            offset="first",
            consumer_name="bench",
            offsets=offsets,
        )
        async def handle_stream(order: Order) -> None:
            counter.hit()

    else:
        delivery: Any = "at_most_once" if spec.scenario == "at_most_once" else "at_least_once"

        @app.handler(spec.queue, prefetch=spec.prefetch, delivery=delivery)
        async def handle(order: Order) -> None:
            counter.hit()

    async with app:
        ready()
        await counter.done.wait()
        result = counter.result()
    return result


async def retry(spec: Spec) -> dict[str, Any]:
    """Fail each message once; the queue's retry policy brings it back through a delay queue."""
    app = App(topology=spec.topology, url=spec.url)
    counter = Counter(spec.count)

    @app.handler(spec.queue, prefetch=spec.prefetch)
    async def handle(order: Order, message: Message) -> None:
        counter.start()
        if message.attempt == 1:
            raise RuntimeError("fails once")
        counter.hit()

    async with app:
        ready()
        await counter.done.wait()
        result = counter.result()
    return result


async def publish(spec: Spec) -> dict[str, Any]:
    """Publish ``spec.count`` persistent messages (``confirm=False`` in mode ``none``)."""
    confirm = spec.mode != "none"
    payloads = bodies(spec.count)
    app = App(topology=spec.topology, url=spec.url)
    # Without confirms, done is when the queue holds every message (as for aio-pika);
    # the depth is polled over a connection of its own, opened before the clock starts.
    poll = None if confirm else await aio_pika.connect(spec.url)
    async with app:

        async def send(i: int) -> None:
            await app.publish("", spec.queue, payloads[i], confirm=confirm)

        start = time.perf_counter()
        if spec.mode == "pipelined":
            await publish_all(send, spec.count, spec.window)
        else:
            for i in range(spec.count):
                await send(i)
        if poll is not None:
            await wait_for_depth(await poll.channel(), spec.queue, spec.count)
        seconds = time.perf_counter() - start
    if poll is not None:
        await poll.close()
    return {"count": spec.count, "seconds": seconds, "rate": spec.count / seconds}


async def main(spec: Spec) -> dict[str, Any]:
    """Dispatch on the scenario."""
    if spec.scenario == "publish":
        return await publish(spec)
    if spec.scenario == "retry":
        return await retry(spec)
    return await consume(spec)


if __name__ == "__main__":
    run(main)
