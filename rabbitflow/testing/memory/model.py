"""The in-memory broker's objects: messages, exchanges (and how each type routes),
bindings, queues and consumers."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pamqp.commands import Basic

from rabbitflow.testing.memory.routing import (
    direct_matches,
    hash_pick,
    headers_match,
    topic_matches,
)

if TYPE_CHECKING:
    from rabbitflow.testing.memory.channel import RawChannel

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers", "x-consistent-hash")
BUILT_IN = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}


class BrokerError(Exception):
    """A channel error the broker would send (``Channel.Close`` with a reply code)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class Stored:
    """One message in one queue."""

    seq: int
    body: bytes
    properties: Basic.Properties
    exchange: str
    routing_key: str
    expires_at: float | None = None
    redelivered: bool = False
    returns: int = 0
    """Times given back to a quorum queue (its ``x-delivery-count``)."""
    offset: int | None = None
    """On a stream queue: the message's offset."""
    written_at: float = 0.0
    """On a stream queue: when it was appended (virtual clock), for retention and
    timestamp offsets."""

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass
class Binding:
    destination: str
    kind: str
    """``queue`` or ``exchange``."""
    routing_key: str
    arguments: dict[str, Any]


@dataclass
class Exchange:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)

    def _hash_pick(self, routing_key: str, headers: Mapping[str, Any] | None) -> list[Binding]:
        ids = [(f"{b.kind}\x00{b.destination}", _weight(b.routing_key)) for b in self.bindings]
        picked = hash_pick(ids, _hash_key(self, routing_key, headers))
        return [b for b in self.bindings if f"{b.kind}\x00{b.destination}" == picked][:1]

    def matches(self, routing_key: str, headers: Mapping[str, Any] | None) -> list[Binding]:
        """The bindings a message with this key and these headers takes."""
        if self.type == "fanout":
            return list(self.bindings)
        if self.type == "direct":
            return [b for b in self.bindings if direct_matches(b.routing_key, routing_key)]
        if self.type == "topic":
            return [b for b in self.bindings if topic_matches(b.routing_key, routing_key)]
        if self.type == "headers":
            return [b for b in self.bindings if headers_match(b.arguments, headers)]
        if self.type == "x-consistent-hash":
            return self._hash_pick(routing_key, headers)
        return []


def _hash_key(exchange: Exchange, routing_key: str, headers: Mapping[str, Any] | None) -> str:
    header = exchange.arguments.get("hash-header")
    if header is None:
        return routing_key
    value = (headers or {}).get(str(header))
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def _weight(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        return 0


@dataclass
class Consumer:
    tag: str
    queue: str
    channel: RawChannel
    callback: Callable[[Any], Any]
    no_ack: bool
    prefetch: int
    """0 for no limit."""
    unacked: int = 0
    cursor: int | None = None
    """On a stream queue: the next offset to deliver."""

    @property
    def has_room(self) -> bool:
        return self.no_ack or self.prefetch == 0 or self.unacked < self.prefetch


@dataclass
class Queue:
    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    owner: object | None = None
    """The connection of an exclusive queue."""
    ready: list[Stored] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    unacked: int = 0
    _next: int = 0
    log: list[Stored] = field(default_factory=list)
    """A stream queue's events, oldest first (reading removes none)."""
    first_offset: int = 0
    """A stream's first offset still kept (retention drops the oldest)."""
    next_offset: int = 0
    """The offset the next event appended to a stream gets."""

    def arg(self, name: str) -> Any:
        return self.arguments.get(name)

    @property
    def is_stream(self) -> bool:
        return bool(self.arg("x-queue-type") == "stream")

    @property
    def message_count(self) -> int:
        """What a declare reports: ready messages, or the events a stream holds."""
        return len(self.log) if self.is_stream else len(self.ready)

    @property
    def ready_bytes(self) -> int:
        return sum(m.size for m in self.ready)

    def insert(self, message: Stored) -> None:
        """Put a message where its priority and sequence number say: a requeued message
        goes back to its old place, a higher priority ahead of lower ones."""
        bisect.insort(self.ready, message, key=self._order)

    def _order(self, message: Stored) -> tuple[int, int]:
        top = self.arg("x-max-priority")
        if top is None:
            return (0, message.seq)
        # Priorities above the queue's maximum count as the maximum.
        return (-min(int(message.properties.priority or 0), int(top)), message.seq)

    def next_consumer(self) -> Consumer | None:
        """The next consumer with room, round-robin (only the first under single active
        consumer)."""
        if not self.consumers:
            return None
        if self.arg("x-single-active-consumer"):
            first = self.consumers[0]
            return first if first.has_room else None
        n = len(self.consumers)
        for i in range(n):
            c = self.consumers[(self._next + i) % n]
            if c.has_room:
                self._next = (self._next + i + 1) % n
                return c
        return None


@dataclass
class Routed:
    """Where a publish went."""

    queues: list[str]
    rejected: bool = False
    """A queue with ``reject-publish`` overflow refused it: the confirm is a nack."""


_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)


def copy_properties(props: Basic.Properties, **changes: Any) -> Basic.Properties:
    """A copy of AMQP properties with some fields replaced."""
    values = {name: getattr(props, name) for name in _PROPERTY_NAMES}
    values.update(changes)
    return Basic.Properties(**values)
