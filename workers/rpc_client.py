"""Ask the pricing service for quotes: ``python -m workers.rpc_client book 3 lamp 120``.

Uses `Producer.request`, which waits for the reply on RabbitMQ's direct reply-to and
raises `RequestTimeout` when no pricing worker answers in time.
"""

from __future__ import annotations

import asyncio
import sys

from rabbitflow import Producer, RabbitflowError
from workers.rpc import Quote


async def main(args: list[str]) -> int:
    pairs = list(zip(args[::2], args[1::2], strict=False)) or [("book", "3"), ("lamp", "120")]
    async with Producer() as producer:
        try:
            quotes = await asyncio.gather(
                *(
                    producer.request(
                        "rpc",
                        "pricing.quote",
                        {"sku": sku, "quantity": int(n)},
                        timeout=5,
                        model=Quote,
                    )
                    for sku, n in pairs
                )
            )
        except RabbitflowError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for q in quotes:
        print(f"{q.quantity:>6} x {q.sku:<6} @ {q.unit_price:>7} = {q.total:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
