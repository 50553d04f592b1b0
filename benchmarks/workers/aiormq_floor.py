"""Raw aiormq with ``no_ack=True`` and a callback that only counts: what aiormq's own
frame reading allows (aio-pika reads with it). It decodes nothing, acks nothing and has
no prefetch bound; the ``at_most_once`` case shows it beside the others. It was the
ceiling of rabbitflow too until rabbitflow read frames itself (rabbitflow/amqp/frames.py):
rabbitflow's consumers now pass it."""

from __future__ import annotations

from typing import Any

import aio_pika

from benchmarks.workers.common import Counter, Spec, ready, run


async def main(spec: Spec) -> dict[str, Any]:
    connection = await aio_pika.connect(spec.url)
    async with connection:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        counter = Counter(spec.count)

        async def on_message(message: Any) -> None:
            counter.hit()

        await raw.basic_consume(spec.queue, on_message, no_ack=True)
        ready()
        await counter.done.wait()
        return counter.result()


if __name__ == "__main__":
    run(main)
