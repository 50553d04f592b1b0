"""The in-memory broker's state: exchanges, queues, bindings, a virtual clock, and what
RabbitMQ does to a message between publish and delivery (routing, TTL, max-length,
dead-lettering). Channels (`rabbitflow.testing.memory.channel`) drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pamqp.commands import Basic

from rabbitflow.testing.memory import streams
from rabbitflow.testing.memory.deadletter import death_headers, is_cycle
from rabbitflow.testing.memory.model import (
    BUILT_IN,
    EXCHANGE_TYPES,
    Binding,
    BrokerError,
    Exchange,
    Queue,
    Routed,
    Stored,
    copy_properties,
)

if TYPE_CHECKING:
    from rabbitflow.testing.memory.channel import RawChannel

__all__ = ["BrokerError", "MemoryBroker", "Stored", "copy_properties"]


class MemoryBroker:
    """An AMQP 0-9-1 broker in memory, faithful to RabbitMQ 3.10 where it matters to
    rabbitflow: routing, TTL, max-length, dead-lettering with ``x-death``, prefetch,
    redelivery, confirms, returns, direct reply-to.

    Time is virtual: nothing expires until `advance` (or a waiting harness) moves the
    clock, so a one-minute retry delay passes in microseconds.

    Args:
        name: the name in ``memory://NAME`` URLs.
        start: the clock's starting time in epoch seconds (default: now).
        auto_advance: while a connection is open, jump the clock to the next expiry
            whenever the broker has been idle (no delivery running or unacked, nothing
            deliverable) for two looks in a row, a millisecond apart.
    """

    def __init__(
        self, name: str = "default", *, start: float | None = None, auto_advance: bool = False
    ) -> None:
        self.name = name
        self.auto_advance = auto_advance
        self._ticker: asyncio.Task[None] | None = None
        self.now = time.time() if start is None else start
        self.exchanges: dict[str, Exchange] = {"": Exchange("", "direct")}
        for ex_name, ex_type in BUILT_IN.items():
            self.exchanges[ex_name] = Exchange(ex_name, ex_type)
        self.queues: dict[str, Queue] = {}
        self.connections: list[Any] = []
        self.reply_channels: dict[str, RawChannel] = {}
        self.delivering = 0
        """Delivery callbacks running right now."""
        self.blocked_reason: str | None = None
        """Set while a simulated memory or disk alarm blocks publishing (`block`)."""
        self._seq = itertools.count(1)
        self._tags = itertools.count(1)

    # -- alarms --------------------------------------------------------------------

    def block(self, reason: str = "low on memory") -> None:
        """Simulate a resource alarm: every connection is blocked (``connection.blocked``)
        and its publishes wait until `unblock`, as RabbitMQ holds them."""
        self.blocked_reason = reason
        for connection in self.connections:
            connection.unblocked.clear()

    def unblock(self) -> None:
        """Clear the alarm: held publishes go through."""
        self.blocked_reason = None
        for connection in self.connections:
            connection.unblocked.set()

    # -- clock ---------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock forward and expire what is due, in time order."""
        target = self.now + seconds
        while True:
            due = self.next_deadline()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.expire_all()
        self.now = target
        self.expire_all()

    def connected(self, connection: Any) -> None:
        """Note a new connection; starts the auto-advance ticker when asked for."""
        self.connections.append(connection)
        if self.auto_advance and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        quiet = 0
        while self.connections:
            await asyncio.sleep(0.001)
            quiet = quiet + 1 if self.idle else 0
            due = self.next_deadline()
            if quiet >= 2 and due is not None:
                self.advance(max(due - self.now, 0.0))
                quiet = 0

    def next_deadline(self) -> float | None:
        """When the next message at the head of a queue expires (head only, like
        RabbitMQ's classic queues)."""
        times = [
            q.ready[0].expires_at
            for q in self.queues.values()
            if q.ready and q.ready[0].expires_at is not None
        ]
        return min(times) if times else None

    def expire_all(self) -> None:
        for queue in list(self.queues.values()):
            if queue.is_stream:
                streams.retain(queue, self.now)
            else:
                self._expire(queue)

    @property
    def idle(self) -> bool:
        """No delivery running or waiting for an ack, and nothing a consumer could take."""
        if self.delivering or any(q.unacked for q in self.queues.values()):
            return False
        return not any(
            (q.ready and q.next_consumer()) or (q.is_stream and streams.waiting(q))
            for q in self.queues.values()
        )

    # -- topology ------------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: Mapping[str, Any],
    ) -> None:
        if name == "" or name.startswith("amq."):
            if name in self.exchanges:
                return
            raise BrokerError(
                403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"
            )
        if type not in EXCHANGE_TYPES:
            raise BrokerError(503, f"COMMAND_INVALID - invalid exchange type '{type}'")
        new = Exchange(name, type, durable, auto_delete, internal, dict(arguments))
        old = self.exchanges.get(name)
        if old is None:
            self.exchanges[name] = new
            return
        for what, a, b in (
            ("type", old.type, type),
            ("durable", old.durable, durable),
            ("auto_delete", old.auto_delete, auto_delete),
            ("internal", old.internal, internal),
        ):
            if a != b:
                raise BrokerError(
                    406,
                    f"PRECONDITION_FAILED - inequivalent arg '{what}' for "
                    f"exchange '{name}' in vhost '{self.name}': received "
                    f"'{_text(b)}' but current is '{_text(a)}'",
                )
        _same_arguments("exchange", name, self.name, old.arguments, dict(arguments))

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
        owner: object,
    ) -> Queue:
        if not name:
            name = f"amq.gen-{next(self._tags):022d}"
        old = self.queues.get(name)
        if old is None:
            queue = Queue(
                name, durable, exclusive, auto_delete, dict(arguments), owner if exclusive else None
            )
            self.queues[name] = queue
            return queue
        if old.exclusive and old.owner is not owner:
            raise BrokerError(
                405,
                f"RESOURCE_LOCKED - cannot obtain exclusive access to "
                f"locked queue '{name}' in vhost '{self.name}'",
            )
        if old.durable != durable:
            raise BrokerError(
                406,
                f"PRECONDITION_FAILED - inequivalent arg 'durable' for "
                f"queue '{name}' in vhost '{self.name}': received "
                f"'{_text(durable)}' but current is '{_text(old.durable)}'",
            )
        _same_arguments("queue", name, self.name, old.arguments, dict(arguments))
        return old

    def bind(
        self,
        destination: str,
        kind: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any],
    ) -> None:
        ex = self.exchange(source)
        if kind == "queue":
            self.queue(destination)
        else:
            self.exchange(destination)
        binding = Binding(destination, kind, routing_key, dict(arguments))
        if binding not in ex.bindings:
            ex.bindings.append(binding)

    def unbind(
        self,
        destination: str,
        kind: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any],
    ) -> None:
        ex = self.exchange(source)
        ex.bindings = [
            b for b in ex.bindings if b != Binding(destination, kind, routing_key, dict(arguments))
        ]

    def exchange(self, name: str) -> Exchange:
        try:
            return self.exchanges[name]
        except KeyError:
            raise BrokerError(
                404, f"NOT_FOUND - no exchange '{name}' in vhost '{self.name}'"
            ) from None

    def queue(self, name: str) -> Queue:
        try:
            return self.queues[name]
        except KeyError:
            raise BrokerError(
                404, f"NOT_FOUND - no queue '{name}' in vhost '{self.name}'"
            ) from None

    def delete_exchange(self, name: str) -> None:
        self.exchanges.pop(name, None)
        for ex in self.exchanges.values():
            ex.bindings = [
                b for b in ex.bindings if not (b.kind == "exchange" and b.destination == name)
            ]

    def delete_queue(self, name: str) -> int:
        queue = self.queues.pop(name, None)
        if queue is None:
            return 0
        for ex in self.exchanges.values():
            ex.bindings = [
                b for b in ex.bindings if not (b.kind == "queue" and b.destination == name)
            ]
        for consumer in list(queue.consumers):
            consumer.channel.broker_cancelled(consumer.tag)
        return len(queue.ready)

    def purge(self, name: str) -> int:
        queue = self.queue(name)
        count, queue.ready = len(queue.ready), []
        return count

    # -- routing -------------------------------------------------------------------

    def route(
        self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None
    ) -> list[str]:
        """The queues a message reaches, through exchange-to-exchange bindings and
        alternate exchanges; each queue once, in binding order."""
        out: list[str] = []
        seen: set[str] = set()
        self._route(self.exchange(exchange), routing_key, headers, out, seen)
        return out

    def _route(
        self,
        ex: Exchange,
        key: str,
        headers: Mapping[str, Any] | None,
        out: list[str],
        seen: set[str],
    ) -> None:
        if ex.name in seen:
            return
        seen.add(ex.name)
        before = len(out)
        if ex.name == "" and key in self.queues:
            out.append(key)
        for b in ex.matches(key, headers):
            if b.kind == "queue":
                if b.destination not in out and b.destination in self.queues:
                    out.append(b.destination)
            elif b.destination in self.exchanges:
                self._route(self.exchanges[b.destination], key, headers, out, seen)
        alternate = ex.arguments.get("alternate-exchange")
        if len(out) == before and alternate in self.exchanges:
            self._route(self.exchanges[str(alternate)], key, headers, out, seen)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties
    ) -> Routed:
        """Route a message and put a copy in each queue it reaches.

        Raises:
            BrokerError: the exchange does not exist, or is internal.
        """
        ex = self.exchange(exchange)
        if ex.internal:
            raise BrokerError(
                403,
                f"ACCESS_REFUSED - cannot publish to internal exchange "
                f"'{exchange}' in vhost '{self.name}'",
            )
        targets = self.route(exchange, routing_key, properties.headers)
        routed = Routed(targets)
        for name in targets:
            if not self.enqueue(self.queues[name], exchange, routing_key, body, properties):
                routed.rejected = True
        return routed

    def enqueue(
        self,
        queue: Queue,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Basic.Properties,
    ) -> bool:
        """Add a message to a queue under its limits; False when overflow refused it."""
        if queue.is_stream:
            message = Stored(next(self._seq), body, properties, exchange, routing_key)
            streams.append(queue, message, self.now)
            self.dispatch(queue)
            return True
        ttl = _ttl_ms(queue.arg("x-message-ttl"), properties.expiration)
        message = Stored(
            next(self._seq),
            body,
            properties,
            exchange,
            routing_key,
            None if ttl is None else self.now + ttl / 1000,
        )
        if self._full(queue, extra=message.size):
            overflow = queue.arg("x-overflow") or "drop-head"
            if overflow in ("reject-publish", "reject-publish-dlx"):
                if overflow == "reject-publish-dlx":
                    self.dead_letter(queue, message, "maxlen")
                return False
            queue.insert(message)
            while queue.ready and self._full(queue, extra=0):
                self.dead_letter(queue, queue.ready.pop(0), "maxlen")
        else:
            queue.insert(message)
        self.dispatch(queue)
        return True

    def _full(self, queue: Queue, *, extra: int) -> bool:
        """Whether one more message (of ``extra`` bytes) would go over the limits; with
        ``extra=0``, whether the queue is over them now."""
        limit = queue.arg("x-max-length")
        if limit is not None and len(queue.ready) + (1 if extra else 0) > int(limit):
            return True
        limit_bytes = queue.arg("x-max-length-bytes")
        # The byte count walks the queue: only for a queue that has the limit (on every
        # publish it made a backlog of N messages cost N^2 / 2 size reads).
        return limit_bytes is not None and queue.ready_bytes + extra > int(limit_bytes)

    # -- dead letters --------------------------------------------------------------

    def dead_letter(self, queue: Queue, message: Stored, reason: str) -> None:
        """Dead-letter a message from ``queue`` as RabbitMQ does, or drop it when the queue
        names no dead-letter exchange (or the exchange is missing, or it is a cycle)."""
        dlx = queue.arg("x-dead-letter-exchange")
        if dlx is None or str(dlx) not in self.exchanges:
            return
        props = message.properties
        headers = death_headers(
            props.headers,
            queue=queue.name,
            reason=reason,
            exchange=message.exchange,
            routing_keys=[message.routing_key, *_cc(props.headers)],
            now=self.now,
            original_expiration=props.expiration,
        )
        key = queue.arg("x-dead-letter-routing-key")
        key = message.routing_key if key is None else str(key)
        # The per-message TTL is not carried over: it is kept in x-death instead.
        new_props = copy_properties(props, headers=headers, expiration=None)
        for name in self.route(str(dlx), key, headers):
            if is_cycle(props.headers, name):
                continue
            self.enqueue(self.queues[name], str(dlx), key, message.body, new_props)

    # -- delivery ------------------------------------------------------------------

    def _expire(self, queue: Queue) -> None:
        while queue.ready:
            head = queue.ready[0]
            if head.expires_at is None or head.expires_at > self.now:
                return
            queue.ready.pop(0)
            self.dead_letter(queue, head, "expired")

    def dispatch(self, queue: Queue) -> None:
        """Hand ready messages to consumers with room, then expire what is due."""
        if queue.is_stream:
            for reader, event in streams.deliverable(queue):
                reader.channel.deliver(reader, queue, event)
            return
        while queue.ready:
            head = queue.ready[0]
            if head.expires_at is not None and head.expires_at < self.now:
                self._expire(queue)
                continue
            consumer = queue.next_consumer()
            if consumer is None:
                break
            queue.ready.pop(0)
            consumer.channel.deliver(consumer, queue, head)
        self._expire(queue)

    def dispatch_all(self) -> None:
        for queue in list(self.queues.values()):
            self.dispatch(queue)

    def delivered_properties(self, queue: Queue, message: Stored) -> Basic.Properties:
        """The properties a consumer sees: a quorum queue adds ``x-delivery-count`` (the
        times the message was returned so far) to each delivery, not to the stored message,
        so dead letters do not carry it. A stream's consumer sees the ``x-stream-offset``."""
        if queue.is_stream:
            return streams.delivered_properties(message)
        if queue.arg("x-queue-type") != "quorum":
            return message.properties
        headers = {**(message.properties.headers or {}), "x-delivery-count": message.returns}
        return copy_properties(message.properties, headers=headers)

    def requeue(self, queue_name: str, messages: Iterable[Stored]) -> None:
        """Give messages back to their queue, marked redelivered, in their old place.

        A quorum queue counts returns and dead-letters a message returned more often than
        its ``x-delivery-limit`` (reason ``delivery_limit``).
        """
        queue = self.queues.get(queue_name)
        if queue is None:
            return
        if queue.is_stream:
            self.dispatch(queue)  # a stream keeps every event: nothing goes back
            return
        quorum = queue.arg("x-queue-type") == "quorum"
        limit = queue.arg("x-delivery-limit")
        for message in messages:
            message.redelivered = True
            if quorum:
                message.returns += 1
                if limit is not None and message.returns > int(limit):
                    self.dead_letter(queue, message, "delivery_limit")
                    continue
            queue.insert(message)
        self.dispatch(queue)

    # -- inspection ----------------------------------------------------------------

    def messages(self, queue: str) -> list[Stored]:
        """The ready messages of a queue, in order (not consumed); a stream's events."""
        q = self.queue(queue)
        return list(q.log if q.is_stream else q.ready)

    def depth(self, queue: str) -> int:
        """Ready plus unacknowledged messages of a queue."""
        q = self.queue(queue)
        if q.is_stream:
            return len(q.log)
        return len(q.ready) + q.unacked


def _ttl_ms(queue_ttl: Any, expiration: str | None) -> int | None:
    values = []
    if queue_ttl is not None:
        values.append(int(queue_ttl))
    if expiration is not None:
        with contextlib.suppress(ValueError):
            values.append(int(expiration))
    return min(values) if values else None


def _cc(headers: Mapping[str, Any] | None) -> list[str]:
    cc = (headers or {}).get("CC") or []
    return [c.decode() if isinstance(c, bytes) else str(c) for c in cc]


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _same_arguments(
    kind: str, name: str, vhost: str, old: dict[str, Any], new: dict[str, Any]
) -> None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            current = "none" if key not in old else f"'{old[key]}'"
            received = f"the value '{new[key]}'" if key in new else "none"
            raise BrokerError(
                406,
                f"PRECONDITION_FAILED - inequivalent arg '{key}' for "
                f"{kind} '{name}' in vhost '{vhost}': received "
                f"{received} but current is {current}",
            )
