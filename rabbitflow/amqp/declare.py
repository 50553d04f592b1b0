"""Declare expanded topology objects on a broker, idempotently, reporting what happened.

Every exchange and queue is first declared passively: a 404 means it is new (`created`),
success means it was there (`exists`). The real declare that follows is what checks the
existing object's arguments: RabbitMQ answers PRECONDITION_FAILED ("inequivalent arg")
and closes the channel. That becomes a `DeclareConflict` result, a new channel is opened,
and declaring goes on, so one run reports every conflict.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from rabbitflow.amqp.transport import CONNECTION_LOST
from rabbitflow.errors import DeclareConflict, DeclareFailed
from rabbitflow.settings import vhost_of
from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl, Role

log = structlog.get_logger("rabbitflow.declare")

_Call = Callable[[aiormq.abc.AbstractChannel], Awaitable[None]]
"""One declare call on a channel: passive or real."""

DECLARE_TIMEOUT = 10.0
"""Seconds allowed for one declare or bind frame to be answered."""


class Status(StrEnum):
    """What declaring one object did."""

    CREATED = "created"
    """The object did not exist and was declared."""
    EXISTS = "exists"
    """An equivalent object was already there; nothing changed."""
    BOUND = "bound"
    """A binding was declared (AMQP cannot tell whether it existed: binding is idempotent)."""
    SKIPPED = "skipped"
    """An exclusive or auto-delete queue: a worker declares it on its own connection."""
    CONFLICT = "conflict"
    """The broker has the object with different arguments; see `DeclareResult.conflict`."""
    REPAIRED = "repaired"
    """A delay-ladder queue that had come back from a broker crash without a leader was
    deleted and declared again (`rabbitflow.amqp.ladder_repair`)."""


@dataclass(frozen=True)
class DeclareResult:
    """The outcome of declaring one object."""

    kind: str
    """``exchange``, ``queue`` or ``binding``."""
    name: str
    """The object's name; for a binding ``source -> destination [key]``."""
    status: Status
    conflict: DeclareConflict | None = None

    def __str__(self) -> str:
        return f"{self.status.value:<8} {self.kind:<8} {self.name}"


async def declare(
    connection: AbstractConnection,
    decls: Declarations,
    *,
    include_worker_owned: bool = False,
) -> list[DeclareResult]:
    """Declare exchanges, then queues, then bindings; report each object.

    Args:
        connection: an open connection to the vhost to declare on.
        decls: the objects, from `rabbitflow.topology.expand.expand`.
        include_worker_owned: declare exclusive/auto-delete queues too (a worker does,
            on its own connection); otherwise they are reported `skipped`, and so are
            their bindings.

    Returns:
        One result per object, in declaration order. Conflicts are results, not raised:
        use `conflicts` to collect them.

    Raises:
        DeclareFailed: when the broker refuses for another reason (access refused, a
            binding to a missing object).
    """
    declarer = _Declarer(connection, _vhost_of(connection))
    try:
        results = [await declarer.exchange(ex) for ex in decls.exchanges]
        skipped = {q.name for q in decls.queues if q.worker_owned and not include_worker_owned}
        for queue in decls.queues:
            if queue.name in skipped:
                results.append(DeclareResult("queue", queue.name, Status.SKIPPED))
            else:
                results.append(await declarer.queue(queue))
        # Before the bindings: deleting a queue drops its bindings, which follow below.
        await _repair_ladder(connection, declarer, decls, results)
        for binding in decls.bindings:
            if binding.destination_type == "queue" and binding.destination in skipped:
                results.append(DeclareResult("binding", binding_label(binding), Status.SKIPPED))
            else:
                results.append(await declarer.bind(binding))
        return results
    finally:
        await declarer.close()


async def _repair_ladder(
    connection: AbstractConnection,
    declarer: _Declarer,
    decls: Declarations,
    results: list[DeclareResult],
) -> None:
    """Delete and declare again the delay-ladder queues that were there but answer
    nothing (`rabbitflow.amqp.ladder_repair`); their results become `Status.REPAIRED`."""
    from rabbitflow.amqp.ladder_repair import broken_ladder_queues, delete_queue

    existing = {r.name for r in results if r.kind == "queue" and r.status is Status.EXISTS}
    ladder = {q.name: q for q in decls.queues if q.role is Role.DELAY and q.name in existing}
    if not ladder:
        return
    for name in await broken_ladder_queues(connection, sorted(ladder)):
        log.warning(
            "delay ladder queue came back from a broker crash without a leader; "
            "deleting and declaring it again",
            queue=name,
        )
        await delete_queue(connection, name)
        await declarer.queue(ladder[name])
        at = next(i for i, r in enumerate(results) if r.kind == "queue" and r.name == name)
        results[at] = DeclareResult("queue", name, Status.REPAIRED)


def conflicts(results: list[DeclareResult]) -> list[DeclareConflict]:
    """The conflicts among declare results, in order."""
    return [r.conflict for r in results if r.conflict is not None]


def binding_label(binding: BindingDecl) -> str:
    """A binding as one short, readable string (`BindingDecl.label`)."""
    return binding.label


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']*)' "
    r"in vhost '(?P<vhost>[^']*)': received (?P<received>.+?) but current is (?P<current>.+)$"
)
_VALUE = re.compile(r"^(?:the value )?'(?P<value>.*?)'(?: of type '(?P<type>[^']*)')?$")
_INT_TYPES = {
    "byte",
    "short",
    "signedint",
    "long",
    "unsignedbyte",
    "unsignedshort",
    "unsignedint",
    "timestamp",
}


def parse_inequivalent(reply_text: str, declared: Mapping[str, Any]) -> DeclareConflict | None:
    """Turn RabbitMQ's PRECONDITION_FAILED reply into a `DeclareConflict`.

    Args:
        reply_text: e.g. ``PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue
            'q' in vhost 'v': received the value 'quorum' of type 'longstr' but current is
            none``.
        declared: the values the files declare, by argument name, to report ours exactly.

    Returns:
        None when the text is not an "inequivalent arg" reply.
    """
    m = _INEQUIVALENT.search(reply_text.strip())
    if m is None:
        return None
    arg = m["arg"]
    existing = _broker_value(m["current"])
    mine = declared.get(arg, _broker_value(m["received"]))
    if (
        isinstance(mine, int)
        and not isinstance(mine, bool)
        and isinstance(existing, str)
        and re.fullmatch(r"-?\d+", existing)
    ):
        # Some versions print numbers without a type ('1000'): read it as ours is typed.
        existing = int(existing)
    return DeclareConflict(m["vhost"], m["kind"], m["name"], arg, existing, mine)


def _broker_value(text: str) -> str | int | bool | None:
    """The value inside the broker's wording: ``the value '2000' of type 'long'`` → 2000.

    ``none`` (the argument is not set) becomes None; integers and booleans are typed back.
    """
    text = text.strip()
    if text == "none":
        return None
    m = _VALUE.match(text)
    if m is None:
        return text
    value, kind = m["value"], m["type"]
    if kind in _INT_TYPES and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind in (None, "bool") and value in ("true", "false"):
        return value == "true"
    return value


class _Declarer:
    """Holds one channel at a time; the broker closes it on every failed declare."""

    def __init__(self, connection: AbstractConnection, vhost: str) -> None:
        self.connection = connection
        self.vhost = vhost
        self.channel: AbstractChannel | None = None

    async def underlay(self) -> aiormq.abc.AbstractChannel:
        if self.channel is None or self.channel.is_closed:
            self.channel = await self.connection.channel(publisher_confirms=False)
        return await self.channel.get_underlay_channel()

    async def close(self) -> None:
        # After a connection-level error the channel is gone with the connection; the
        # error that ended declaring is the one worth reporting, not this one.
        if self.channel is not None and not self.channel.is_closed:
            with contextlib.suppress(*CONNECTION_LOST):
                await self.channel.close()

    def _closed(self) -> None:
        # The broker closed this channel with the error: the next call opens another.
        self.channel = None

    async def exchange(self, ex: ExchangeDecl) -> DeclareResult:
        async def real(ch: aiormq.abc.AbstractChannel) -> None:
            await ch.exchange_declare(
                ex.name,
                exchange_type=ex.type,
                durable=ex.durable,
                auto_delete=ex.auto_delete,
                internal=ex.internal,
                arguments=dict(ex.arguments),
                timeout=DECLARE_TIMEOUT,
            )

        async def passive(ch: aiormq.abc.AbstractChannel) -> None:
            await ch.exchange_declare(ex.name, passive=True, timeout=DECLARE_TIMEOUT)

        declared = {
            "type": ex.type,
            "durable": ex.durable,
            "auto_delete": ex.auto_delete,
            "internal": ex.internal,
            **ex.arguments,
        }
        return await self._object("exchange", ex.name, passive, real, declared)

    async def queue(self, q: QueueDecl) -> DeclareResult:
        async def real(ch: aiormq.abc.AbstractChannel) -> None:
            await ch.queue_declare(
                q.name,
                durable=q.durable,
                exclusive=q.exclusive,
                auto_delete=q.auto_delete,
                arguments=dict(q.arguments),
                timeout=DECLARE_TIMEOUT,
            )

        async def passive(ch: aiormq.abc.AbstractChannel) -> None:
            await ch.queue_declare(q.name, passive=True, timeout=DECLARE_TIMEOUT)

        declared = {
            "durable": q.durable,
            "exclusive": q.exclusive,
            "auto_delete": q.auto_delete,
            **q.arguments,
        }
        return await self._object("queue", q.name, passive, real, declared)

    async def _object(
        self, kind: str, name: str, passive: _Call, real: _Call, declared: Mapping[str, Any]
    ) -> DeclareResult:
        async with self._failures(kind, name):
            try:
                await passive(await self.underlay())
                status = Status.EXISTS
            except aiormq.exceptions.ChannelNotFoundEntity:
                self._closed()
                status = Status.CREATED
            try:
                await real(await self.underlay())
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                conflict = parse_inequivalent(_reply_text(exc), declared)
                if conflict is None:
                    raise
                self._closed()
                return DeclareResult(kind, name, Status.CONFLICT, conflict)
        return DeclareResult(kind, name, status)

    async def bind(self, b: BindingDecl) -> DeclareResult:
        label = binding_label(b)
        async with self._failures("binding", label):
            ch = await self.underlay()
            bind = ch.exchange_bind if b.destination_type == "exchange" else ch.queue_bind
            await bind(
                b.destination,
                b.source,
                b.routing_key,
                arguments=dict(b.arguments),
                timeout=DECLARE_TIMEOUT,
            )
        return DeclareResult("binding", label, Status.BOUND)

    @contextlib.asynccontextmanager
    async def _failures(self, kind: str, name: str) -> AsyncIterator[None]:
        """Turn what the broker refuses into one `DeclareFailed` line naming the object."""
        where = f"vhost {self.vhost!r}: cannot declare {kind} {name!r}"
        try:
            yield
        except aiormq.exceptions.AMQPChannelError as exc:
            self._closed()
            raise DeclareFailed(f"{where}: {_reply_text(exc)}") from None
        except aiormq.exceptions.AMQPConnectionError as exc:
            # Errors such as an unknown exchange type close the whole connection.
            raise DeclareFailed(
                f"{where}: {_reply_text(exc)} (the broker closed the connection)"
            ) from None
        except TimeoutError:
            raise DeclareFailed(
                f"{where}: no answer from the broker within {DECLARE_TIMEOUT:g}s"
            ) from None
        except (ConnectionError, RuntimeError):
            # aio-pika raises RuntimeError when opening a channel on a closed connection.
            raise DeclareFailed(f"{where}: the connection to the broker is closed") from None


def _reply_text(exc: BaseException) -> str:
    # aiormq puts the broker's Channel.Close frame (or its text) in args.
    for arg in exc.args:
        text = getattr(arg, "reply_text", None)
        if isinstance(text, str):
            return text
    return " ".join(str(a) for a in exc.args) or type(exc).__name__


def _vhost_of(connection: AbstractConnection) -> str:
    return vhost_of(str(getattr(connection, "url", "") or ""))
