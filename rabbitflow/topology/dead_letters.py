"""Where a work queue's dead letters are kept, from the topology alone (no network)."""

from __future__ import annotations

from dataclasses import dataclass

from rabbitflow.errors import ConfigError
from rabbitflow.topology.expand import dead_letter_route
from rabbitflow.topology.matching import topic_matches
from rabbitflow.topology.schema import ExchangeType, QueueType, Topology, dead_letter_queue_name

__all__ = ["DeadLetterQueue", "find_dead_letter_queue", "topic_matches"]


@dataclass(frozen=True)
class DeadLetterQueue:
    """The queue holding a work queue's dead letters."""

    name: str
    work_queue: str
    shared: bool = False
    """True with the mapping form of ``dead_letter`` (a shared exchange): the DLQ may also
    hold other queues' dead letters, so commands touch only those of `work_queue`."""


def find_dead_letter_queue(queue: str, topology: Topology | None = None) -> DeadLetterQueue:
    """The DLQ of work queue ``queue``: ``Q.dlq``, or with the mapping form of
    ``dead_letter`` the one queue bound to that exchange for the dead letters' routing key.

    A stream consumer's dead letters (DESIGN.md §9) are named by ``<stream>.<consumer
    name>``: its DLQ is ``<stream>.<consumer name>.dlq``. Without a topology, ``Q.dlq`` is
    assumed.

    Raises:
        ConfigError: when the topology does not declare ``queue``, gives it no dead letters,
            or binds no single queue to receive them.
    """
    if topology is None:
        return DeadLetterQueue(dead_letter_queue_name(queue), queue)
    declared = topology.queues.get(queue)
    if declared is None and _stream_consumer(queue, topology):
        return DeadLetterQueue(dead_letter_queue_name(queue), queue)
    if declared is None:
        raise ConfigError(
            f"queue {queue!r} is not in the topology files "
            f"(they declare {', '.join(sorted(topology.queues)) or 'no queue'})"
        )
    route = dead_letter_route(queue, declared)
    if route is None:
        raise ConfigError(f"queue {queue!r} keeps no dead letters (dead_letter: false)")
    if declared.dead_letters is True:
        return DeadLetterQueue(dead_letter_queue_name(queue), queue)
    exchange, key = route
    kind = topology.exchanges[exchange].type if exchange in topology.exchanges else None
    receivers = list(
        dict.fromkeys(
            name
            for name, q in topology.queues.items()
            for b in q.bind
            if b.exchange == exchange and any(_routes(kind, k, key) for k in b.keys)
        )
    )
    if len(receivers) != 1:
        found = ", ".join(receivers) if receivers else "none"
        raise ConfigError(
            f"queue {queue!r} dead-letters to exchange {exchange!r} with key "
            f"{key!r}: expected one queue bound to receive them, found {found}"
        )
    return DeadLetterQueue(receivers[0], queue, shared=True)


def _stream_consumer(name: str, topology: Topology) -> bool:
    """Whether ``name`` is ``<stream>.<consumer name>`` for a stream queue of ``topology``."""
    return any(
        q.type is QueueType.STREAM and name.startswith(f"{s}.") and len(name) > len(s) + 1
        for s, q in topology.queues.items()
    )


def _routes(kind: ExchangeType | None, binding_key: str, routing_key: str) -> bool:
    if kind in (ExchangeType.FANOUT, ExchangeType.HEADERS, ExchangeType.CONSISTENT_HASH):
        return True
    if kind is ExchangeType.TOPIC:
        return topic_matches(binding_key, routing_key)
    return binding_key == routing_key
