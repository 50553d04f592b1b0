"""Raw aio-pika: the baseline every ratio is relative to.

Written the way the aio-pika docs show it: ``queue.consume(callback)`` with a manual
``message.ack()`` after the handler, ``exchange.publish`` for publishing.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

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


async def consume(spec: Spec) -> dict[str, Any]:
    """Drain ``spec.count`` messages, acking each after a no-op handler (scenario
    ``at_most_once``: consumed with ``no_ack=True``, nothing acked)."""
    connection = await aio_pika.connect(spec.url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=spec.prefetch)
        queue = await channel.get_queue(spec.queue, ensure=False)
        counter = Counter(spec.count)
        stats = IdleStats() if spec.scenario == "processes" else None
        latency = spec.scenario == "latency"
        validate = spec.validate
        no_ack = spec.scenario == "at_most_once"
        # A stream is read from its first event; each delivery acked (credit).
        arguments = {"x-stream-offset": "first"} if spec.scenario == "stream" else None

        async def on_message(message: AbstractIncomingMessage) -> None:
            if latency:
                # the delay is taken on arrival; the count only once the ack is written
                body = message.body
                ts = Order.model_validate_json(body).ts if validate else json.loads(body)["ts"]
                latency_ns = time.time_ns() - ts
                await message.ack()
                counter.latencies_ns.append(latency_ns)
                counter.hit()
                return
            if validate:
                Order.model_validate_json(message.body)
            if not no_ack:
                await message.ack()
            if stats is not None:
                stats.hit()
            else:
                counter.hit()

        await queue.consume(on_message, no_ack=no_ack, arguments=arguments)
        ready()
        if stats is not None:
            await asyncio.Event().wait()  # the harness stops this process
        await counter.done.wait()
        return counter.result()


async def publish(spec: Spec) -> dict[str, Any]:
    """Publish ``spec.count`` persistent messages in ``spec.mode``."""
    payloads = bodies(spec.count)
    confirms = spec.mode != "none"
    connection = await aio_pika.connect(spec.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=confirms)
        exchange = channel.default_exchange
        key = spec.queue

        async def send(i: int) -> None:
            await exchange.publish(
                aio_pika.Message(
                    payloads[i],
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=key,
            )

        start = time.perf_counter()
        if spec.mode == "pipelined":
            await publish_all(send, spec.count, spec.window)
        else:
            for i in range(spec.count):
                await send(i)
        if not confirms:
            await wait_for_depth(channel, spec.queue, spec.count)
        seconds = time.perf_counter() - start
    return {"count": spec.count, "seconds": seconds, "rate": spec.count / seconds}


async def wait_for_depth(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    """Without confirms, publishing is done when the queue holds every message."""
    while True:
        declared = await channel.declare_queue(queue, passive=True)
        if (declared.declaration_result.message_count or 0) >= count:
            return
        await asyncio.sleep(0.005)


async def retry(spec: Spec) -> dict[str, Any]:
    """Fail each message once: republish it to a TTL delay queue (confirmed), ack, succeed."""
    connection = await aio_pika.connect(spec.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=spec.prefetch)
        queue = await channel.get_queue(spec.queue, ensure=False)
        exchange = channel.default_exchange
        counter = Counter(spec.count)

        async def on_message(message: AbstractIncomingMessage) -> None:
            counter.start()
            Order.model_validate_json(message.body)
            headers = dict(message.headers)
            if "x-attempt" not in headers:
                # the handler "failed": the copy goes out confirmed before the ack
                headers["x-attempt"] = 2
                await exchange.publish(
                    aio_pika.Message(
                        message.body,
                        headers=headers,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=spec.retry_queue,
                )
                await message.ack()
                return
            await message.ack()
            counter.hit()

        await queue.consume(on_message)
        ready()
        await counter.done.wait()
        return counter.result()


async def main(spec: Spec) -> dict[str, Any]:
    """Dispatch on the scenario."""
    if spec.scenario == "publish":
        return await publish(spec)
    if spec.scenario == "retry":
        return await retry(spec)
    return await consume(spec)


if __name__ == "__main__":
    run(main)
