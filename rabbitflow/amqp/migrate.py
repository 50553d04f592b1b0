"""``rabbitflow migrate``: recreate a queue under a definition RabbitMQ refuses in place.

A queue's type, durability and arguments are fixed when it is declared; changing them
means deleting it. To do that without losing a message while publishers keep publishing,
each queue ``Q`` goes through a temporary queue ``Q.migrate``:

1. declare ``Q.migrate`` (classic, durable, no limits; argument ``x-rabbitflow-migrating:
   Q``) and the vhost marker exchange ``rabbitflow.migrating``; bind ``Q.migrate`` like
   ``Q`` (its live bindings and those of the files), then unbind ``Q``: new publishes land
   in ``Q.migrate``;
2. move every message of ``Q`` to ``Q.migrate``: published with confirms, acked on ``Q``
   only once confirmed; delete ``Q`` (``if-empty``: a message that still arrived is moved
   first);
3. declare ``Q`` under its new definition and bind it as the files say, then unbind
   ``Q.migrate``; move every message back to ``Q`` the same way; delete ``Q.migrate``;
   when no migration is left, delete the marker exchange.

The progress is the broker's state itself, so a second run after ``kill -9`` anywhere
resumes: ``Q.migrate`` there and ``Q`` of the old definition → step 1-2 again; ``Q``
missing or of the new definition → step 3. A message is acked only after its copy was
confirmed, so an interruption can duplicate messages (those moved but not yet acked, and
those published while both queues were bound), never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from rabbitflow.amqp.management import HttpManagement, JsonObject
from rabbitflow.amqp.plan import Action, compare
from rabbitflow.errors import RabbitflowError
from rabbitflow.topology.expand import BindingDecl, Declarations, QueueDecl
from rabbitflow.topology.fingerprint import fingerprint, tag_fingerprint

MARKER_EXCHANGE = "rabbitflow.migrating"
"""Exists while a migration runs in the vhost: workers check it before declaring."""
MARKER_ARGUMENT = "x-rabbitflow-migrating"
"""On ``Q.migrate``: the queue it migrates (a queue of that name made by others is not ours)."""
DETAILS_WAIT = 8.0
"""Seconds allowed for the management API to list consumers AMQP already counts."""
MOVE_PREFETCH = 1000
"""Messages in flight while moving (published, waiting for the confirm before the ack)."""


class MigrationError(RabbitflowError):
    """A migration cannot start or go on (consumers on the queue, a stream, a full queue)."""


def temp_queue_name(queue: str) -> str:
    """The temporary queue holding ``queue``'s messages during its migration."""
    return f"{queue}.migrate"


@dataclass(frozen=True)
class QueueMigration:
    """One queue to recreate: its live and its new definition, and its bindings."""

    name: str
    live: QueueDecl | None
    """None when a previous run deleted it already."""
    target: QueueDecl
    bindings: tuple[BindingDecl, ...]
    """What the files bind to it."""
    describe: str = ""
    """The differences, as ``plan`` prints them."""

    def steps(self) -> list[str]:
        """The steps, one line each, for people to read before saying yes."""
        q, t = self.name, temp_queue_name(self.name)
        return [
            f"1. declare {t} (classic, durable, no limits) and bind it like {q}; unbind {q}",
            f"2. move every message of {q} to {t} (confirmed, then acked); delete {q}",
            f"3. declare {q} with its new definition and bind it; unbind {t}",
            f"4. move every message of {t} back to {q}; delete {t}",
        ]


@dataclass
class MigrationReport:
    """What one queue's migration did."""

    queue: str
    moved_out: int = 0
    moved_back: int = 0
    resumed: bool = False
    notes: list[str] = field(default_factory=list)


def queues_to_migrate(
    declared: Declarations, live: Declarations, only: Sequence[str] = ()
) -> list[QueueMigration]:
    """The queues ``plan`` reports as differing (and those a run left half-migrated).

    Args:
        declared: the files' declarations.
        live: the broker's.
        only: limit to these queues (``--queue``); a name not to migrate is an error.
    """
    result = compare(declared, live)
    differing = {
        c.name: c for c in result.changes if c.kind == "queue" and c.action is Action.DIFFER
    }
    live_q = {q.name: q for q in live.queues}
    pending = {
        q.arguments.get(MARKER_ARGUMENT)
        for q in live.queues
        if q.name.endswith(".migrate") and MARKER_ARGUMENT in q.arguments
    }
    out: list[QueueMigration] = []
    for q in declared.queues:
        change = differing.get(repr(q.name))
        if change is None and q.name not in pending:
            continue
        if only and q.name not in only:
            continue
        bindings = tuple(
            b
            for b in declared.bindings
            if b.destination_type == "queue" and b.destination == q.name
        )
        out.append(
            QueueMigration(
                q.name, live_q.get(q.name), q, bindings, change.describe() if change else ""
            )
        )
    unknown = [n for n in only if n not in {m.name for m in out}]
    if unknown:
        raise MigrationError(
            f"nothing to migrate for queue {unknown[0]!r}: plan reports no difference "
            "that needs recreating it"
        )
    return out


def _deletes_if_empty(q: QueueDecl) -> bool:
    # Quorum queues (and streams) answer if-empty/if-unused with NOT_IMPLEMENTED.
    return bool(q.arguments.get("x-queue-type", "classic") == "classic")


def same_definition(a: QueueDecl, b: QueueDecl) -> bool:
    """Whether two declarations of a queue are equivalent for the broker."""
    return fingerprint(a.durable, a.arguments) == fingerprint(b.durable, b.arguments) and (
        a.auto_delete == b.auto_delete
    )


@dataclass(frozen=True)
class Consumer:
    """A consumer of a queue, as the management API lists it."""

    tag: str
    connection: str
    kind: str
    """``old worker``, ``worker`` (of another definition) or ``other``."""

    def __str__(self) -> str:
        who = {
            "old worker": "a rabbitflow worker of the old definition",
            "worker": "a rabbitflow worker of another definition",
        }.get(self.kind, "a consumer that is not a rabbitflow worker")
        return f"{who} (consumer tag {self.tag!r}, connection {self.connection!r})"


def classify_consumers(details: Sequence[JsonObject], live: QueueDecl | None) -> list[Consumer]:
    """Tell rabbitflow workers (by their consumer tag) of the old definition from others."""
    old = fingerprint(live.durable, live.arguments) if live is not None else None
    out = []
    for c in details:
        tag = str(c.get("consumer_tag", ""))
        conn = str((c.get("channel_details") or {}).get("connection_name", "?"))
        found = tag_fingerprint(tag)
        kind = "other" if found is None else "old worker" if found == old else "worker"
        out.append(Consumer(tag, conn, kind))
    return out


async def migrations_in_progress(
    connection: AbstractConnection, queues: Sequence[str]
) -> list[str]:
    """Which of ``queues`` a `rabbitflow migrate` is recreating right now (workers ask
    before declaring, so that none re-creates a queue's old definition meanwhile)."""
    if not await _exists(connection, "exchange", MARKER_EXCHANGE):
        return []
    return [q for q in queues if await _exists(connection, "queue", temp_queue_name(q))]


async def _exists(connection: AbstractConnection, kind: str, name: str) -> bool:
    channel = await connection.channel(publisher_confirms=False)
    try:
        if kind == "exchange":
            await channel.declare_exchange(name, passive=True)
        else:
            await channel.declare_queue(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


class Migrator:
    """Carries out `QueueMigration`s on one connection, with the management API for the
    bindings and consumers the broker holds."""

    def __init__(
        self,
        connection: AbstractConnection,
        api: HttpManagement,
        vhost: str,
        *,
        wait: bool = False,
        poll: float = 0.5,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.connection = connection
        self.api = api
        self.vhost = vhost
        self.wait = wait
        self.poll = poll
        self.say = say

    async def run(self, migration: QueueMigration) -> MigrationReport:
        """Migrate one queue (or finish a migration a previous run left), end to end."""
        q, t = migration.name, temp_queue_name(migration.name)
        report = MigrationReport(q)
        live = await self._live_queue(q)
        temp = await self._live_queue(t)
        if temp is not None and temp.arguments.get(MARKER_ARGUMENT) != q:
            raise MigrationError(
                f"queue {t!r} exists and was not made by rabbitflow migrate for {q!r}; "
                "rename or delete it first"
            )
        report.resumed = temp is not None
        if live is not None and not same_definition(live, migration.target):
            if live.arguments.get("x-queue-type") == "stream":
                raise MigrationError(
                    f"queue {q!r} is a stream: its messages cannot be moved (a stream "
                    "is read, not drained); recreate it by hand"
                )
            await self._no_consumers(q, live)
            await self._declare_temp(q)
            await self._no_consumers(q, live)  # one that arrived while the marker went up
            await self._bind_temp_like(q)
            report.moved_out = await self._move(q, t)
            await self._delete_empty(q, t, report, flags=_deletes_if_empty(live))
        elif temp is None:
            report.notes.append("already under its new definition")
            return report
        await self._declare_target(migration)
        for b in migration.bindings:
            await self._bind(b.source, q, b.routing_key, b.arguments)
        for b in await self._bindings(t):
            await self._unbind(b, t)
        self._check_room(migration, await self._count(t))
        report.moved_back = await self._move(t, q)
        await self._delete_empty(t, q, report, flags=True)
        await self._drop_marker()
        return report

    async def _live_queue(self, name: str) -> QueueDecl | None:
        body = await self.api.queue(self.vhost, name)
        if body is None:
            return None
        return QueueDecl(
            name,
            bool(body.get("durable", True)),
            bool(body.get("exclusive", False)),
            bool(body.get("auto_delete", False)),
            dict(body.get("arguments") or {}),
        )

    async def _no_consumers(self, queue: str, live: QueueDecl | None) -> None:
        """Refuse (or, with ``wait``, wait) while anything consumes the queue: a delivery
        unacked when the queue is deleted would be lost with it."""
        reported = False
        while True:
            count = await self._consumer_count(queue)
            if count == 0:
                return
            # Refusing: worth a few seconds to name them; waiting: say so at once.
            found = await self._consumers(queue, live, patient=not self.wait)
            first = str(found[0]) if found else f"{count} consumer(s)"
            more = f" and {len(found) - 1} more" if len(found) > 1 else ""
            if not self.wait:
                raise MigrationError(
                    f"queue {queue!r} has consumers: {first}{more}; stop them (or pass --wait "
                    "to wait for them to go)"
                )
            if not reported:
                self.say(f"waiting for the consumers of {queue} to go: {first}{more}")
                reported = True
            await asyncio.sleep(self.poll)

    async def _consumers(
        self, queue: str, live: QueueDecl | None, *, patient: bool
    ) -> list[Consumer]:
        # The management API learns of a new consumer with its next statistics round
        # (5 s by default): give it that long to name the consumers AMQP counted.
        for _ in range(int(DETAILS_WAIT / self.poll) + 1 if patient else 1):
            body = await self.api.queue(self.vhost, queue) or {}
            details = body.get("consumer_details") or []
            if details:
                return classify_consumers(details, live)
            await asyncio.sleep(self.poll)
        return []

    async def _consumer_count(self, queue: str) -> int:
        # AMQP's count is exact and immediate; the management API's lags by its stats interval.
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.consumer_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _count(self, queue: str) -> int:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _declare_temp(self, queue: str) -> None:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            await channel.declare_exchange(MARKER_EXCHANGE, "fanout", durable=True)
            await channel.declare_queue(
                temp_queue_name(queue), durable=True, arguments={MARKER_ARGUMENT: queue}
            )
        finally:
            await channel.close()

    async def _bind_temp_like(self, queue: str) -> None:
        """Bind ``Q.migrate`` with every binding of ``Q``, then take them off ``Q``: new
        publishes land in ``Q.migrate`` (in both for an instant: duplicates, no gap)."""
        temp = temp_queue_name(queue)
        live = await self._bindings(queue)
        for b in live:
            await self._bind(b.source, temp, b.routing_key, b.arguments)
        for b in live:
            await self._unbind(b, queue)

    async def _bindings(self, queue: str) -> list[BindingDecl]:
        found = await self.api.queue_bindings(self.vhost, queue)
        return [
            BindingDecl(
                str(b["source"]),
                queue,
                "queue",
                str(b.get("routing_key", "")),
                dict(b.get("arguments") or {}),
            )
            for b in found
            if b.get("source")  # the default exchange's implicit binding
        ]

    async def _bind(self, exchange: str, queue: str, key: str, args: Any) -> None:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            raw = await channel.get_underlay_channel()
            await raw.queue_bind(queue, exchange, key, arguments=dict(args))
        finally:
            await channel.close()

    async def _unbind(self, b: BindingDecl, queue: str) -> None:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            raw = await channel.get_underlay_channel()
            await raw.queue_unbind(queue, b.source, b.routing_key, arguments=dict(b.arguments))
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _declare_target(self, m: QueueMigration) -> None:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            raw = await channel.get_underlay_channel()
            await raw.queue_declare(
                m.name,
                durable=m.target.durable,
                exclusive=m.target.exclusive,
                auto_delete=m.target.auto_delete,
                arguments=dict(m.target.arguments),
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise MigrationError(
                f"cannot declare {m.name!r} under its new definition: {exc}"
            ) from None
        finally:
            if not channel.is_closed:
                await channel.close()

    def _check_room(self, m: QueueMigration, waiting: int) -> None:
        limit = m.target.arguments.get("x-max-length")
        if isinstance(limit, int) and waiting > limit:
            raise MigrationError(
                f"{temp_queue_name(m.name)} holds {waiting} messages but the new definition "
                f"of {m.name!r} has max_length {limit}: moving them would drop or refuse the "
                "rest; raise max_length (or consume some), then run migrate again"
            )

    async def _move(self, source: str, target: str) -> int:
        """Move every message of ``source`` to ``target`` through the default exchange:
        each is published with its properties and headers, and acked on ``source`` only
        once the broker confirmed the copy. Returns how many moved."""
        return await _Mover(self.connection, source, target).run()

    async def _delete_empty(
        self, queue: str, refill_to: str, report: MigrationReport, *, flags: bool
    ) -> None:
        """Delete ``queue`` once empty and unused; a message that arrived meanwhile is
        moved first. Classic queues are deleted with ``if-empty``/``if-unused``, so the
        broker itself refuses to drop a message; quorum queues do not implement those
        flags (a connection error): they are checked just before an unconditional delete."""
        for _ in range(100):
            if not flags and (await self._count(queue) or await self._consumer_count(queue)):
                await self._no_consumers(queue, None)
                moved = await self._move(queue, refill_to)
                report.notes.append(f"{moved} late message(s) of {queue} moved")
                continue
            channel = await self.connection.channel(publisher_confirms=False)
            try:
                raw = await channel.get_underlay_channel()
                await raw.queue_delete(queue, if_empty=flags, if_unused=flags)
                return
            except aiormq.exceptions.ChannelPreconditionFailed:
                await self._no_consumers(queue, None)
                moved = await self._move(queue, refill_to)
                report.notes.append(f"{moved} late message(s) of {queue} moved before deleting it")
            finally:
                if not channel.is_closed:
                    with contextlib.suppress(Exception):
                        await channel.close()
        raise MigrationError(f"queue {queue!r} never became empty; run migrate again")

    async def _drop_marker(self) -> None:
        definitions = await self.api.definitions(self.vhost)
        left = [
            q
            for q in definitions.get("queues") or []
            if MARKER_ARGUMENT in (q.get("arguments") or {})
        ]
        if left:
            return
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            await channel.exchange_delete(MARKER_EXCHANGE)
        finally:
            if not channel.is_closed:
                await channel.close()


class _Mover:
    """Consumes ``source`` with a window of unconfirmed copies; acks each after its confirm.

    Works on aiormq's channels: the delivery's properties object is published as it came
    (every property and header kept byte for byte), with no per-message conversion.
    """

    def __init__(self, connection: AbstractConnection, source: str, target: str) -> None:
        self.connection = connection
        self.source = source
        self.target = target
        self.moved = 0
        self.in_flight = 0
        self.failure: BaseException | None = None
        self.settled = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        consume_ch = await self.connection.channel(publisher_confirms=False)
        publish_ch = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            raw_in = await consume_ch.get_underlay_channel()
            raw_out = await publish_ch.get_underlay_channel()
            await raw_in.basic_qos(prefetch_count=MOVE_PREFETCH)

            async def received(message: DeliveredMessage) -> None:
                self.in_flight += 1
                self.settled.clear()
                task = asyncio.create_task(self._copy(message, raw_in, raw_out))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

            ok = await raw_in.basic_consume(self.source, received, no_ack=False)
            try:
                await self._until_drained(raw_in)
            finally:
                with contextlib.suppress(Exception):
                    await raw_in.basic_cancel(ok.consumer_tag or "")
                await self._settle()
            if self.failure is not None:
                raise MigrationError(
                    f"moving {self.source} to {self.target} stopped: {self.failure}; "
                    "nothing was lost (unconfirmed messages stay in the source); run migrate again"
                )
            return self.moved
        finally:
            for ch in (consume_ch, publish_ch):
                if not ch.is_closed:
                    with contextlib.suppress(Exception):
                        await ch.close()

    async def _copy(
        self,
        message: DeliveredMessage,
        raw_in: aiormq.abc.AbstractChannel,
        raw_out: aiormq.abc.AbstractChannel,
    ) -> None:
        tag = message.delivery_tag
        assert tag is not None
        try:
            if self.failure is None:
                confirm = await raw_out.basic_publish(
                    message.body,
                    exchange="",
                    routing_key=self.target,
                    properties=message.header.properties,
                    mandatory=True,
                    timeout=30,
                )
                if not isinstance(confirm, Basic.Ack):
                    raise MigrationError(f"the broker refused the copy ({type(confirm).__name__})")
                await raw_in.basic_ack(tag)
                self.moved += 1
            else:
                await raw_in.basic_nack(tag, requeue=True)
        except Exception as exc:  # a nack, a return, a closed channel: keep the original
            self.failure = self.failure or exc
            with contextlib.suppress(Exception):
                await raw_in.basic_nack(tag, requeue=True)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.settled.set()

    async def _until_drained(self, raw: aiormq.abc.AbstractChannel) -> None:
        while self.failure is None:
            await asyncio.sleep(0.05)
            if self.in_flight:
                continue
            declared = await raw.queue_declare(self.source, passive=True)
            # Ready 0 with nothing of ours in flight: every message was moved (our own
            # deliveries not yet settled count as unacked, not ready).
            if declared.message_count == 0 and self.in_flight == 0:
                return

    async def _settle(self) -> None:
        while self.in_flight:
            self.settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled.wait(), 1.0)
