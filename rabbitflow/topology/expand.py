"""Expand a topology into the concrete objects to declare (DESIGN.md §1, "What a retry
policy expands to"): the declared ones plus each queue's delay queues, ``Q.dlx`` and ``Q.dlq``.

The names and arguments here are a contract: consumers in other languages and the DLQ
tools find retry and dead-letter objects by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rabbitflow.topology.schema import (
    Binding,
    DeadLetterTarget,
    Exchange,
    ExchangeType,
    Queue,
    QueueType,
    Topology,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    retry_queue_name,
)
from rabbitflow.units import stream_max_age


class Role(StrEnum):
    """Why an object exists."""

    DECLARED = "declared"
    """Written in a topology file."""
    RETRY = "retry"
    """A TTL delay queue that moves messages back to their work queue."""
    DEAD_LETTER = "dead_letter"
    """A generated ``Q.dlx`` exchange or ``Q.dlq`` queue."""


@dataclass(frozen=True)
class ExchangeDecl:
    """An exchange as the broker sees it."""

    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    role: Role = Role.DECLARED
    owner: str | None = None
    """For generated objects: the work queue they serve."""


@dataclass(frozen=True)
class QueueDecl:
    """A queue as the broker sees it."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    role: Role = Role.DECLARED
    owner: str | None = None

    @property
    def worker_owned(self) -> bool:
        """Exclusive and auto-delete queues live and die with a worker's connection."""
        return self.exclusive or self.auto_delete


@dataclass(frozen=True)
class BindingDecl:
    """A binding from an exchange to a queue or to another exchange."""

    source: str
    destination: str
    destination_type: str = "queue"
    routing_key: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    role: Role = Role.DECLARED


@dataclass(frozen=True)
class Declarations:
    """Everything to declare, in an order the broker accepts: exchanges, queues, bindings."""

    exchanges: tuple[ExchangeDecl, ...]
    queues: tuple[QueueDecl, ...]
    bindings: tuple[BindingDecl, ...]


def expand(topology: Topology) -> Declarations:
    """The concrete objects a topology stands for, generated ones included."""
    exchanges = [_exchange(name, ex) for name, ex in topology.exchanges.items()]
    queues: list[QueueDecl] = []
    bindings: list[BindingDecl] = []
    for name, queue in topology.queues.items():
        queues.append(
            QueueDecl(
                name,
                queue.durable,
                queue.exclusive,
                queue.auto_delete,
                queue_arguments(queue, name),
            )
        )
        for b in queue.bind:
            bindings += _queue_bindings(name, b)
        for delay in retry_delays(queue):
            queues.append(_retry_queue(name, queue, delay))
        if queue.dead_letters is True:
            dlx, dlq = dead_letter_exchange_name(name), dead_letter_queue_name(name)
            exchanges.append(ExchangeDecl(dlx, "fanout", role=Role.DEAD_LETTER, owner=name))
            args = {"x-queue-type": "quorum"} if queue.type is QueueType.QUORUM else {}
            queues.append(QueueDecl(dlq, arguments=args, role=Role.DEAD_LETTER, owner=name))
            bindings.append(BindingDecl(dlx, dlq, role=Role.DEAD_LETTER))
    for eb in topology.bindings:
        args = dict(eb.arguments)
        if eb.headers is not None:
            args = {"x-match": eb.match or "all", **eb.headers, **args}
        bindings.append(BindingDecl(eb.source, eb.destination, "exchange", eb.routing_key, args))
    return Declarations(tuple(exchanges), tuple(queues), tuple(bindings))


def retry_delays(queue: Queue) -> list[int]:
    """The distinct delays (ms) a queue's retry schedule uses, in order of first use."""
    if queue.retry is None:
        return []
    return list(dict.fromkeys(queue.retry.schedule))


def dead_letter_route(name: str, queue: Queue) -> tuple[str, str] | None:
    """Where rabbitflow publishes a dead letter of ``queue``: (exchange, routing key).

    None when the queue has no dead letters (rabbitflow then nacks without requeue).
    """
    target = queue.dead_letters
    if target is True:
        return dead_letter_exchange_name(name), name
    if isinstance(target, DeadLetterTarget):
        return target.exchange, target.routing_key if target.routing_key is not None else name
    return None


def queue_arguments(queue: Queue, name: str) -> dict[str, Any]:
    """The `x-` arguments of a declared queue, raw ``arguments`` merged last."""
    args: dict[str, Any] = {}
    if queue.type is not QueueType.CLASSIC:
        # Classic queues carry no x-queue-type, so queues made by other tools redeclare.
        args["x-queue-type"] = queue.type.value
    optional = {
        "x-max-length": queue.max_length,
        "x-max-length-bytes": queue.max_length_bytes,
        "x-overflow": queue.overflow.value if queue.overflow else None,
        "x-message-ttl": queue.message_ttl,
        "x-expires": queue.expires,
        "x-delivery-limit": queue.delivery_limit,
        "x-max-priority": queue.max_priority,
        "x-max-age": stream_max_age(queue.max_age) if queue.max_age else None,
    }
    args.update({k: v for k, v in optional.items() if v is not None})
    if queue.single_active_consumer:
        args["x-single-active-consumer"] = True
    target = queue.dead_letters
    if target is True:
        args["x-dead-letter-exchange"] = dead_letter_exchange_name(name)
    elif isinstance(target, DeadLetterTarget):
        args["x-dead-letter-exchange"] = target.exchange
        if target.routing_key is not None:
            args["x-dead-letter-routing-key"] = target.routing_key
    args.update(queue.arguments)
    return args


def _exchange(name: str, ex: Exchange) -> ExchangeDecl:
    args = dict(ex.arguments)
    if ex.alternate_exchange is not None:
        args = {"alternate-exchange": ex.alternate_exchange, **args}
    return ExchangeDecl(name, ex.type.value, ex.durable, ex.auto_delete, ex.internal, args)


def _queue_bindings(queue: str, b: Binding) -> list[BindingDecl]:
    args = dict(b.arguments)
    if b.headers is not None or b.match is not None:
        args = {"x-match": b.match or "all", **(b.headers or {}), **args}
        return [BindingDecl(b.exchange, queue, "queue", b.routing_key or "", args)]
    return [BindingDecl(b.exchange, queue, "queue", key, args) for key in b.keys]


def _retry_queue(name: str, queue: Queue, delay: int) -> QueueDecl:
    args: dict[str, Any] = {
        "x-message-ttl": delay,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": name,
    }
    if queue.type is QueueType.QUORUM:
        # at-least-once dead-lettering moves the message back only once Q confirmed it,
        # and requires reject-publish overflow.
        args = {
            "x-queue-type": "quorum",
            **args,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    return QueueDecl(
        retry_queue_name(name, delay), queue.durable, arguments=args, role=Role.RETRY, owner=name
    )


__all__ = [
    "BindingDecl",
    "Declarations",
    "ExchangeDecl",
    "ExchangeType",
    "QueueDecl",
    "Role",
    "dead_letter_route",
    "expand",
    "queue_arguments",
    "retry_delays",
]
