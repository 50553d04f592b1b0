"""``python -m benchmarks.delayed``: delayed publish through the ``rabbitflow.delay.*``
ladder — publish throughput (confirmed) and the delay error, arrival - due, for N
messages with random delays of 1-5 s. One run; ``--output`` keeps the figures as JSON.

Arrival is taken when the consumer (raw aio-pika, prefetch 1000, outside the timed
publish) gets the message; due is the publish time plus the delay asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import aio_pika

from benchmarks.broker import amqp_url, fresh_vhost
from rabbitflow import Producer
from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand

TOPOLOGY = """
version: 1
exchanges:
  bench: {type: topic, delayed: true}
queues:
  due: {bind: [{exchange: bench, routing_key: "#"}]}
"""


async def measure(url: str, count: int, seed: int = 7) -> dict[str, Any]:
    connection = await connect(url)
    await declare(connection, expand(load_text(TOPOLOGY)))
    await connection.close()
    rng = random.Random(seed)
    delays = [rng.randint(1, 5) for _ in range(count)]
    sent_at: list[float] = [0.0] * count
    arrived: dict[int, float] = {}
    done = asyncio.Event()

    consumer = await aio_pika.connect(url)
    channel = await consumer.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.get_queue("due")

    async def on_message(m: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived.setdefault(int(m.body), time.time())
        await m.ack()
        if len(arrived) >= count:
            done.set()

    await queue.consume(on_message)
    async with Producer(url) as producer:
        await producer.link.get()
        start = time.perf_counter()
        for d in range(1, 6):
            batch = [i for i in range(count) if delays[i] == d]

            def stamped(batch: list[int] = batch) -> Any:
                for i in batch:
                    sent_at[i] = time.time()  # taken by a lane just before it is sent
                    yield Outgoing("bench", "k", i)

            result = await producer.publish_many(stamped(), window=500, delay=d)
            assert result.ok, result.failed
        seconds = time.perf_counter() - start
    try:
        await asyncio.wait_for(done.wait(), 60 + seconds)
    finally:
        await consumer.close()
    errors = sorted(arrived[i] - (sent_at[i] + delays[i]) for i in arrived)
    q = statistics.quantiles(errors, n=100)
    return {
        "count": count,
        "arrived": len(arrived),
        "publish_rate": count / seconds,
        "publish_seconds": seconds,
        "error_p50_s": q[49],
        "error_p99_s": q[98],
        "error_min_s": errors[0],
        "error_max_s": errors[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with fresh_vhost("rf-bench-delay") as vhost:
        result = asyncio.run(measure(amqp_url(vhost), args.count))
    print(
        f"delayed publish: {result['publish_rate']:,.0f} msg/s confirmed; "
        f"{result['arrived']}/{result['count']} arrived; arrival − due "
        f"p50 {result['error_p50_s']:.3f}s, p99 {result['error_p99_s']:.3f}s, "
        f"min {result['error_min_s']:.3f}s, max {result['error_max_s']:.3f}s"
    )
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
