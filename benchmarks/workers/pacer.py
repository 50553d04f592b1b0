"""Publishes at a fixed rate for the latency scenario, the body stamped with the send time.

The same pacer serves every implementation, so the figures compare the consumers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiormq
from pamqp.commands import Basic

from benchmarks.workers.common import make_body


async def pace(url: str, queue: str, rate: int, seconds: float) -> None:
    """Publish ``rate`` messages a second for ``seconds``, without confirms."""
    total = int(rate * seconds)
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        props = Basic.Properties(delivery_mode=2, content_type="application/json")
        sent = 0
        start = time.perf_counter()
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                await channel.basic_publish(
                    make_body(sent, time.time_ns()), routing_key=queue, properties=props
                )
                sent += 1
            await asyncio.sleep(0.0005)
    finally:
        await connection.close()


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    asyncio.run(pace(args["url"], args["queue"], args["rate"], args["seconds"]))
