"""`Message`: what a handler may know about its delivery (header names: `rabbitflow.headers`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rabbitflow.headers import (
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    from_delay_queue,
    read_attempt,
    read_text,
)


class Message:
    """A delivery's metadata, handed to handlers with a parameter annotated `Message`.

    On a retried delivery, `exchange` and `routing_key` are the original ones, so a topic
    handler sees what was published, and `attempt` counts from 1.

    The headers come from the producer, so they are read defensively: an attempt that is
    not an int in 1..1,000,000 counts as 1, and the original-exchange and -routing-key
    headers are believed only on a delivery that came back from the queue's own delay
    queues (or a ``dlq replay``); ``consumed`` is the physical queue delivered from (a
    partition), when it differs from ``queue``. ``stream_offset`` is the event's offset on
    a stream queue (DESIGN.md §9), None elsewhere.
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
        "stream_offset",
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
        consumed: str | None = None,
        stream_offset: int | None = None,
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
        self.stream_offset = stream_offset
        """The event's offset on a stream queue (``x-stream-offset``); None elsewhere."""
        self.exchange, self.routing_key, self.attempt = exchange, routing_key, 1
        if headers:
            self.attempt = read_attempt(headers)
            if from_delay_queue(
                headers, queue=consumed or queue, exchange=exchange, routing_key=routing_key
            ):
                original = read_text(headers, ORIGINAL_EXCHANGE)
                self.exchange = exchange if original is None else original
                original = read_text(headers, ORIGINAL_ROUTING_KEY)
                self.routing_key = routing_key if original is None else original

    def __repr__(self) -> str:
        return (
            f"Message(queue={self.queue!r}, message_id={self.message_id!r}, "
            f"attempt={self.attempt}, routing_key={self.routing_key!r}, "
            f"{len(self.body)} bytes)"
        )


__all__ = ["Message"]
