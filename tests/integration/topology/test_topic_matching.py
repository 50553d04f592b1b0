"""`topic_matches` agrees with RabbitMQ, the empty routing key included: bindings are
made on the real broker and every key's routes are read back."""

from __future__ import annotations

from typing import Any

import pytest

from rabbitflow.topology.matching import topic_matches

pytestmark = pytest.mark.broker

PATTERNS = ["#", "*", "*.#", "#.*", "#.#", "", "a", "a.*", "a.#", "#.b", "*.b", "a.*.c", "a.#.c"]
KEYS = ["", "a", "b", "a.b", "x.b", "a.c", "a.b.c", "a.x.y.c", "a.b.d"]


async def test_topic_matching_is_the_brokers(channel: Any) -> None:
    import aio_pika

    exchange = await channel.declare_exchange("t", aio_pika.ExchangeType.TOPIC)
    queues = {}
    for i, pattern in enumerate(PATTERNS):
        queue = await channel.declare_queue(f"q{i}")
        await queue.bind(exchange, routing_key=pattern)
        queues[pattern] = queue
    broker: dict[tuple[str, str], bool] = {}
    for key in KEYS:
        await exchange.publish(aio_pika.Message(body=key.encode() or b"(empty)"), routing_key=key)
        for pattern, queue in queues.items():
            got = await queue.get(no_ack=True, fail=False)
            broker[(pattern, key)] = got is not None
    ours = {(p, k): topic_matches(p, k) for p in PATTERNS for k in KEYS}
    assert ours == broker
    # The case the old copy in topology/dead_letters.py got wrong.
    assert broker[("*", "")] is False
    assert broker[("*.#", "")] is False
    assert broker[("#", "")] is True
