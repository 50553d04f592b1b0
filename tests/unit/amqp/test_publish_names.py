"""`Producer.publish` refuses a destination the AMQP codec cannot send with a
`RabbitflowError`, before any connection (the codec's bare ValueError never escapes)."""

from __future__ import annotations

import pytest

from rabbitflow import ConfigError, Producer
from rabbitflow.errors import InvalidName


@pytest.mark.parametrize(
    ("exchange", "routing_key", "fragment"),
    [
        ("x" * 300, "k", "exchange name is 300 characters"),
        ("заказы", "k", "character 'з'"),
        ("orders", "k" * 256, "routing key is 256 bytes"),
    ],
)
async def test_publish_raises_invalid_name(exchange: str, routing_key: str, fragment: str) -> None:
    producer = Producer("amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(InvalidName, match=fragment) as caught:
        await producer.publish(exchange, routing_key, {"a": 1})
    assert isinstance(caught.value, ConfigError)
    assert producer.link.current is None  # nothing was opened
    await producer.close()
