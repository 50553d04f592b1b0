"""FastStream: the same scenarios through ``RabbitBroker`` subscribers and ``broker.publish``.

Ack policy ``ACK`` (ack after the handler returns) matches the others' manual ack.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from benchmarks.workers.aiopika import wait_for_depth
from benchmarks.workers.common import (
    Counter,
    IdleStats,
    Order,
    Spec,
    bodies,
    publish_all,
    ready,
    run,
)


def _queue(spec: Spec) -> RabbitQueue:
    # The harness declared the queue; FastStream only checks that it exists.
    return RabbitQueue(spec.queue, durable=True, declare=False)


async def consume(spec: Spec) -> dict[str, Any]:
    """Drain ``spec.count`` messages with a no-op subscriber."""
    broker = RabbitBroker(spec.url, log_level=30)
    counter = Counter(spec.count)
    stats = IdleStats() if spec.scenario == "processes" else None
    sub = broker.subscriber(
        _queue(spec), channel=Channel(prefetch_count=spec.prefetch), ack_policy=AckPolicy.ACK
    )
    if spec.scenario == "latency":
        if spec.validate:

            @sub
            async def handle_latency_model(body: Order) -> None:
                counter.hit_latency(body.ts)
        else:

            @sub
            async def handle_latency(body):  # type: ignore[no-untyped-def]
                counter.hit_latency(body["ts"])
    elif spec.validate:

        @sub
        async def handle_model(body: Order) -> None:
            stats.hit() if stats is not None else counter.hit()
    else:

        @sub
        async def handle(body):  # type: ignore[no-untyped-def]
            stats.hit() if stats is not None else counter.hit()

    async with broker:
        await broker.start()
        ready()
        if stats is not None:
            await asyncio.Event().wait()  # the harness stops this process
        await counter.done.wait()
        result = counter.result()
    return result


async def publish(spec: Spec) -> dict[str, Any]:
    """Publish ``spec.count`` persistent messages in ``spec.mode``."""
    payloads = bodies(spec.count)
    confirms = spec.mode != "none"
    broker = RabbitBroker(
        spec.url, log_level=30, default_channel=Channel(publisher_confirms=confirms)
    )
    async with broker:
        await broker.start()

        async def send(i: int) -> None:
            await broker.publish(
                payloads[i], spec.queue, persist=True, content_type="application/json"
            )

        start = time.perf_counter()
        if spec.mode == "pipelined":
            await publish_all(send, spec.count, spec.window)
        else:
            for i in range(spec.count):
                await send(i)
        if not confirms:
            async with await aio_pika.connect(spec.url) as connection:
                await wait_for_depth(await connection.channel(), spec.queue, spec.count)
        seconds = time.perf_counter() - start
    return {"count": spec.count, "seconds": seconds, "rate": spec.count / seconds}


async def main(spec: Spec) -> dict[str, Any]:
    """Dispatch on the scenario."""
    if spec.scenario == "publish":
        return await publish(spec)
    return await consume(spec)


if __name__ == "__main__":
    run(main)
