"""`Message`: what a handler may know about its delivery, and the stable header names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

ATTEMPT = "x-rabbitflow-attempt"
"""On a retry copy, the attempt it will be; on a dead letter, the attempt that failed last."""
QUEUE = "x-rabbitflow-queue"
"""The queue whose handler failed."""
ERROR = "x-rabbitflow-error"
"""``ExceptionType: message`` of the last failure (at most 1 KiB)."""
TRACEBACK = "x-rabbitflow-traceback"
"""The traceback of the last failure, on dead letters (at most 8 KiB, keeping its end)."""
FAILED_AT = "x-rabbitflow-failed-at"
"""ISO-8601 UTC time of the last failure."""
ORIGINAL_EXCHANGE = "x-rabbitflow-original-exchange"
ORIGINAL_ROUTING_KEY = "x-rabbitflow-original-routing-key"
REPLAYED_AT = "x-rabbitflow-replayed-at"
"""Set by ``rabbitflow dlq replay`` on the messages it moves back."""


class Message:
    """A delivery's metadata, handed to handlers with a parameter annotated `Message`.

    On a retried delivery, `exchange` and `routing_key` are the original ones, so a topic
    handler sees what was published, and `attempt` counts from 1.
    """

    __slots__ = (
        "attempt",
        "body",
        "content_type",
        "correlation_id",
        "delivery_tag",
        "exchange",
        "headers",
        "message_id",
        "priority",
        "queue",
        "redelivered",
        "reply_to",
        "routing_key",
        "timestamp",
    )

    def __init__(
        self,
        *,
        body: bytes,
        headers: dict[str, Any],
        exchange: str,
        routing_key: str,
        queue: str,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        content_type: str | None = None,
        timestamp: datetime | None = None,
        redelivered: bool = False,
        delivery_tag: int = 0,
        priority: int | None = None,
    ) -> None:
        self.body = body
        self.headers = headers
        self.queue = queue
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.content_type = content_type
        self.timestamp = timestamp
        self.redelivered = redelivered
        self.delivery_tag = delivery_tag
        self.priority = priority
        if headers:
            self.exchange = str(headers.get(ORIGINAL_EXCHANGE, exchange))
            self.routing_key = str(headers.get(ORIGINAL_ROUTING_KEY, routing_key))
            self.attempt = _as_int(headers.get(ATTEMPT), 1)
        else:
            self.exchange, self.routing_key, self.attempt = exchange, routing_key, 1

    def __repr__(self) -> str:
        return (
            f"Message(queue={self.queue!r}, message_id={self.message_id!r}, "
            f"attempt={self.attempt}, routing_key={self.routing_key!r}, "
            f"{len(self.body)} bytes)"
        )


def _as_int(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, bytes | str):
        try:
            return max(int(value), 1)
        except ValueError:
            return default
    return default
