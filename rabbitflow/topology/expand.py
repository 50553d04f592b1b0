"""Expand a topology into the concrete objects to declare (DESIGN.md §1, "What a retry
policy expands to"): the declared ones plus each queue's delay queues, ``Q.dlx`` and ``Q.dlq``.

The names and arguments here are a contract: consumers in other languages and the DLQ
tools find retry and dead-letter objects by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from rabbitflow.topology import delay
from rabbitflow.topology.policies import PolicyDecl, policy_declarations
from rabbitflow.topology.schedule import distinct_delays
from rabbitflow.topology.schema import (
    Binding,
    DeadLetterTarget,
    Exchange,
    ExchangeType,
    Partitions,
    Queue,
    QueueType,
    Topology,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    partition_exchange_name,
    partition_queue_names,
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
    PARTITION = "partition"
    """A partitioned queue's ``Q.partitions`` exchange, a ``Q.p<i>`` queue, or their binding."""
    DELAY = "delay"
    """An object of the ``rabbitflow.delay.*`` ladder (delayed publish)."""


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

    @property
    def matches(self) -> str:
        """What the binding matches: its routing key, or its header match
        (``any: format=mp4``). The one wording of a binding; graphs label edges with it."""
        if "x-match" in self.arguments:
            pairs = ", ".join(f"{k}={v}" for k, v in self.arguments.items() if k != "x-match")
            return f"{self.arguments['x-match']}: {pairs}"
        return self.routing_key

    @property
    def label(self) -> str:
        """The binding as one line: ``orders -> payments.charge [order.*]``."""
        label = f"{self.source or '(default)'} -> {self.destination}"
        matches = self.matches
        return f"{label} [{matches}]" if matches else label


@dataclass(frozen=True)
class Declarations:
    """Everything to declare, in an order the broker accepts: exchanges, queues, bindings."""

    exchanges: tuple[ExchangeDecl, ...]
    queues: tuple[QueueDecl, ...]
    bindings: tuple[BindingDecl, ...]
    policies: tuple[PolicyDecl, ...] = ()
    """Applied through the management API, after the objects."""


def expand(topology: Topology) -> Declarations:
    """The concrete objects a topology stands for, generated ones included."""
    exchanges = [_exchange(name, ex) for name, ex in topology.exchanges.items()]
    queues: list[QueueDecl] = []
    bindings: list[BindingDecl] = []
    for name, queue in topology.queues.items():
        if queue.partitions is not None:
            exchanges.append(_partition_exchange(name, queue.partitions))
            queues += _partition_queues(name, queue, queue.partitions)
            bindings += _partition_bindings(name, queue, queue.partitions)
        else:
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
    delayed = delayed_exchanges(topology)
    if delayed:
        _delay_ladder(delayed, exchanges, queues, bindings)
    return Declarations(
        tuple(exchanges), tuple(queues), tuple(bindings), policy_declarations(topology.policies)
    )


def delayed_exchanges(topology: Topology) -> list[str]:
    """The exchanges that can receive delayed messages (``delayed: true``)."""
    return [name for name, ex in topology.exchanges.items() if ex.delayed]


def _delay_ladder(
    targets: list[str],
    exchanges: list[ExchangeDecl],
    queues: list[QueueDecl],
    bindings: list[BindingDecl],
) -> None:
    exchanges.append(ExchangeDecl(delay.DELIVER, "headers", internal=True, role=Role.DELAY))
    for k in reversed(range(delay.LEVELS)):
        # The top level is where publishers enter, so it is not internal.
        internal = k != delay.LEVELS - 1
        name = delay.level_name(k)
        exchanges.append(ExchangeDecl(name, "headers", internal=internal, role=Role.DELAY))
        queues.append(QueueDecl(name, arguments=delay.ladder_queue_arguments(k), role=Role.DELAY))
        for source, dest, kind, args in delay.ladder_bindings(k):
            bindings.append(BindingDecl(source, dest, kind, "", args, role=Role.DELAY))
    for target in targets:
        source, dest, kind, args = delay.deliver_binding(target)
        bindings.append(BindingDecl(source, dest, kind, "", args, role=Role.DELAY))


def retry_delays(queue: Queue) -> list[int]:
    """The distinct delays (ms) a queue's retry schedule uses, in order of first use."""
    if queue.retry is None:
        return []
    return distinct_delays(queue.retry)


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


def physical_queues(topology: Topology, name: str) -> list[str]:
    """The queues a handler registered for queue ``name`` consumes.

    ``[name]``, or for a partitioned queue its partition queues ``[Q.p0, …]`` (the
    partitioned queue itself is not declared). A name the topology does not declare is
    returned as is: a queue made outside the files.
    """
    queue = topology.queues.get(name)
    if queue is None or queue.partitions is None:
        return [name]
    return partition_queue_names(name, queue.partitions.count)


def logical_queue(topology: Topology, physical: str) -> str:
    """The declared queue a consumed queue belongs to: ``Q`` for ``Q.p3``, else itself.

    The worker uses it to find the retry policy and dead-letter route of a partition.
    """
    for name, queue in topology.queues.items():
        if queue.partitions is not None and physical in partition_queue_names(
            name, queue.partitions.count
        ):
            return name
    return physical


def _partition_exchange(name: str, partitions: Partitions) -> ExchangeDecl:
    args = {} if partitions.header is None else {"hash-header": partitions.header}
    return ExchangeDecl(
        partition_exchange_name(name),
        ExchangeType.CONSISTENT_HASH.value,
        arguments=args,
        role=Role.PARTITION,
        owner=name,
    )


def _partition_queues(name: str, queue: Queue, partitions: Partitions) -> list[QueueDecl]:
    """Each partition is a copy of the declared queue, with its own delay queues."""
    args = queue_arguments(queue, name)  # dead letters of every partition go to Q's DLX
    # One consumer at a time per partition: the broker delivers in queue order.
    args.setdefault("x-single-active-consumer", True)
    out: list[QueueDecl] = []
    for part in partition_queue_names(name, partitions.count):
        out.append(QueueDecl(part, queue.durable, arguments=args, role=Role.PARTITION, owner=name))
        out += [_retry_queue(part, queue, delay) for delay in retry_delays(queue)]
    return out


def _partition_bindings(name: str, queue: Queue, partitions: Partitions) -> list[BindingDecl]:
    """Q's own bindings feed ``Q.partitions``, which spreads messages over the partitions."""
    exchange = partition_exchange_name(name)
    feeds = [
        replace(b, destination=exchange, destination_type="exchange")
        for spec in queue.bind
        for b in _queue_bindings(name, spec)
    ]
    # The binding key of a consistent-hash exchange is the partition's weight: equal
    # weights give each partition an equal share of the hash space.
    spread = [
        BindingDecl(exchange, part, "queue", "1", role=Role.PARTITION)
        for part in partition_queue_names(name, partitions.count)
    ]
    return feeds + spread


__all__ = [
    "BindingDecl",
    "Declarations",
    "ExchangeDecl",
    "ExchangeType",
    "PolicyDecl",
    "QueueDecl",
    "Role",
    "dead_letter_route",
    "delayed_exchanges",
    "expand",
    "logical_queue",
    "physical_queues",
    "queue_arguments",
    "retry_delays",
]
