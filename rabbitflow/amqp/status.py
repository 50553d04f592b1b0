"""``rabbitflow status``: what each work queue holds, from the management API or, without
it, from passive declares over AMQP (ready messages and consumers only).

Retry delay queues and DLQs are not shown as rows of their own: their depths appear on the
row of the work queue they serve (``retrying``, ``dead_letters``). The delay ladder's
queues have a section of their own (`rabbitflow.amqp.delay_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.delay_status import is_ladder_queue
from rabbitflow.amqp.management import JsonObject, ManagementApi
from rabbitflow.errors import ConfigError
from rabbitflow.streams.offsets import OffsetStore
from rabbitflow.topology.dead_letters import find_dead_letter_queue
from rabbitflow.topology.expand import Role, expand
from rabbitflow.topology.schema import Topology


@dataclass(frozen=True)
class QueueStatus:
    """One work queue; None where the source cannot tell."""

    queue: str
    exists: bool = True
    type: str | None = None
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    publish_rate: float | None = None
    """Messages per second published to the queue (management API only)."""
    deliver_rate: float | None = None
    """Messages per second delivered to consumers (management API only)."""
    retrying: int | None = None
    """Messages waiting in the queue's retry delay queues."""
    dead_letter_queue: str | None = None
    """``Q.dlq``, or the queue receiving Q's dead letters from a shared exchange (whose
    depth then counts other queues' dead letters too)."""
    dead_letters: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The row as a JSON object (``status --json``)."""
        return asdict(self)


@dataclass(frozen=True)
class Layout:
    """Which queues to show, and which delay queues and DLQ belong to each."""

    work_queues: tuple[str, ...]
    retry_queues: Mapping[str, tuple[str, ...]]
    dead_letter_queues: Mapping[str, str]


def layout_from_topology(topology: Topology) -> Layout:
    """The work queues a topology declares, with their generated queues."""
    decls = expand(topology)
    retry: dict[str, list[str]] = {}
    for q in decls.queues:
        if q.role is Role.RETRY and q.owner is not None:
            retry.setdefault(q.owner, []).append(q.name)
    dlqs = {}
    for name in topology.queues:
        try:
            dlqs[name] = find_dead_letter_queue(name, topology).name
        except ConfigError:
            continue  # no dead letters, or no single queue receives them
    return Layout(tuple(topology.queues), {k: tuple(v) for k, v in retry.items()}, dlqs)


def layout_from_names(names: Iterable[str]) -> Layout:
    """Guess the layout of a vhost from queue names (``Q.retry.<d>``, ``Q.dlq``). The
    delay ladder's queues are left out (`rabbitflow.amqp.delay_status` shows them)."""
    present = [n for n in names if not is_ladder_queue(n)]
    known = set(present)
    retry: dict[str, list[str]] = {}
    dlqs: dict[str, str] = {}
    generated: set[str] = set()
    for name in present:
        owner, sep, _ = name.rpartition(".retry.")
        if sep and owner in known:
            retry.setdefault(owner, []).append(name)
            generated.add(name)
        if name.endswith(".dlq") and name[:-4] in known:
            dlqs[name[:-4]] = name
            generated.add(name)
    work = tuple(n for n in sorted(present) if n not in generated)
    return Layout(work, {k: tuple(v) for k, v in retry.items()}, dlqs)


def rows_from_management(queues: Sequence[JsonObject], layout: Layout | None) -> list[QueueStatus]:
    """Status rows from ``GET /api/queues/{vhost}``; the layout defaults to one guessed
    from the queue names."""
    by_name = {str(q["name"]): q for q in queues if not str(q["name"]).startswith("amq.")}
    layout = layout or layout_from_names(by_name)

    def depth(name: str) -> int | None:
        q = by_name.get(name)
        return None if q is None else int(q.get("messages", 0) or 0)

    rows = []
    for name in layout.work_queues:
        q = by_name.get(name)
        retry_names = layout.retry_queues.get(name, ())
        depths = [d for d in (depth(r) for r in retry_names) if d is not None]
        dlq = layout.dead_letter_queues.get(name)
        common: dict[str, Any] = {
            "retrying": sum(depths) if retry_names else None,
            "dead_letter_queue": dlq,
            "dead_letters": depth(dlq) if dlq else None,
        }
        if q is None:
            rows.append(QueueStatus(name, exists=False, **common))
            continue
        stats = q.get("message_stats") or {}
        rows.append(
            QueueStatus(
                name,
                type=q.get("type"),
                ready=q.get("messages_ready"),
                unacked=q.get("messages_unacknowledged"),
                consumers=q.get("consumers"),
                publish_rate=_rate(stats, "publish_details"),
                deliver_rate=_rate(stats, "deliver_get_details"),
                **common,
            )
        )
    return rows


async def status_from_management(
    api: ManagementApi, vhost: str, topology: Topology | None
) -> list[QueueStatus]:
    """Rows for the topology's work queues, or every queue of the vhost without one."""
    layout = layout_from_topology(topology) if topology is not None else None
    return rows_from_management(await api.queues(vhost), layout)


async def status_from_amqp(
    connection: AbstractConnection, topology: Topology | None
) -> list[QueueStatus]:
    """Rows from passive declares: ready messages and consumers, no unacked or rates.

    Raises:
        ConfigError: without a topology (AMQP cannot list a vhost's queues).
    """
    if topology is None:
        raise ConfigError(
            "without the management plugin, status needs topology files to "
            "know which queues to show: rabbitflow status FILE..."
        )
    layout = layout_from_topology(topology)
    rows = []
    for name in layout.work_queues:
        counts = await _passive(connection, name)
        retry_names = layout.retry_queues.get(name, ())
        retry_counts = [await _passive(connection, r) for r in retry_names]
        dlq = layout.dead_letter_queues.get(name)
        dlq_counts = await _passive(connection, dlq) if dlq else None
        rows.append(
            QueueStatus(
                name,
                exists=counts is not None,
                ready=counts[0] if counts else None,
                consumers=counts[1] if counts else None,
                retrying=sum(c[0] for c in retry_counts if c) if retry_names else None,
                dead_letter_queue=dlq,
                dead_letters=dlq_counts[0] if dlq_counts else None,
            )
        )
    return rows


async def _passive(connection: AbstractConnection, name: str) -> tuple[int, int] | None:
    """(ready, consumers) of a queue, or None when it does not exist."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None  # the broker closed the channel
    result = queue.declaration_result
    await channel.close()
    return int(result.message_count or 0), int(result.consumer_count or 0)


def _rate(stats: Mapping[str, Any], key: str) -> float | None:
    details = stats.get(key)
    if isinstance(details, Mapping) and "rate" in details:
        return float(details["rate"])
    return 0.0 if stats else None


@dataclass(frozen=True)
class ConsumerPosition:
    """A stored stream consumer position and how far it lags behind the last event."""

    consumer_name: str
    offset: int
    lag: int | None
    """Events after the stored position up to the stream's last offset (None when the
    stream's last offset is unknown)."""


@dataclass(frozen=True)
class StreamStatus:
    """One stream queue: its size and offsets, and the stored consumer positions."""

    stream: str
    exists: bool = True
    messages: int | None = None
    """Events the stream holds (the management API's ``messages``; RabbitMQ 3.10 tells
    no size in bytes and no offsets, which come from AMQP peeks)."""
    first_offset: int | None = None
    last_offset: int | None = None
    positions: tuple[ConsumerPosition, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The stream as a JSON object (``status --json``)."""
        return asdict(self)


async def stream_status(
    connection: AbstractConnection,
    stream: str,
    *,
    messages: int | None,
    offsets: OffsetStore | None = None,
    idle: float = 0.5,
) -> StreamStatus:
    """First and last offsets by peeking at the stream (``x-stream-offset`` first and
    last; nothing is removed), with each stored position of ``offsets`` and its lag."""
    from rabbitflow.streams.replay import first_offset, last_offset

    try:
        first = await first_offset(connection, stream, idle=idle)
        last = await last_offset(connection, stream, idle=idle)
    except ConfigError:
        return StreamStatus(stream, exists=False)
    positions: tuple[ConsumerPosition, ...] = ()
    if offsets is not None:
        stored = await offsets.positions(stream)
        positions = tuple(
            ConsumerPosition(name, offset, None if last is None else max(0, last - offset))
            for name, offset in sorted(stored.items())
        )
    return StreamStatus(stream, True, messages, first, last, positions)


def stream_names(rows: Sequence[QueueStatus], topology: Topology | None) -> list[str]:
    """The stream queues among the rows: by the broker's type, or the topology's."""
    declared = {name for name, q in (topology.queues.items() if topology else ()) if _is_stream(q)}
    return [r.queue for r in rows if r.type == "stream" or r.queue in declared]


def _is_stream(queue: Any) -> bool:
    kind = getattr(queue, "type", None)
    return str(getattr(kind, "value", kind)) == "stream"
