"""The worker: one consuming connection, a consumer per handler queue, and the loop that
restores them after the broker goes away (DESIGN.md §2 Lifecycle)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.connection import connect_with, is_open, vhost_of
from rabbitflow.amqp.declare import conflicts, declare
from rabbitflow.amqp.management import management_client
from rabbitflow.amqp.migrate import MigrationError, migrations_in_progress
from rabbitflow.amqp.policies import apply_policies
from rabbitflow.amqp.publish import Publisher
from rabbitflow.errors import BrokerUnavailable, HandlerError, RabbitflowError
from rabbitflow.settings import Settings
from rabbitflow.topology.expand import Declarations, dead_letter_route, expand, physical_queues
from rabbitflow.topology.fingerprint import fingerprint
from rabbitflow.topology.schema import QueueType, Topology
from rabbitflow.worker.consumer import COPY_FAILURE_PAUSE, QueueConsumer, Route
from rabbitflow.worker.gc_tuning import tune_for_worker
from rabbitflow.worker.handler import HandlerSpec, StreamOptions
from rabbitflow.worker.hooks import DeliveryTracer, OutcomeObserver
from rabbitflow.worker.pipeline import DeliveryObserver, Middleware, SettledObserver
from rabbitflow.worker.stream import DEFAULT_STREAM_PREFETCH, StreamRoute, dead_letter_queue_name
from rabbitflow.worker.watchdog import LoopWatchdog

log = structlog.get_logger("rabbitflow.worker")

RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0
_OUTCOMES = ("ack", "retry", "dead_letter", "nack", "requeue")
"""The outcomes the stop line always names, 0 included."""


def routes_for(topology: Topology, queue: str, spec: HandlerSpec | None = None) -> list[Route]:
    """The physical queues a handler of ``queue`` consumes (the queue, or each of its
    partitions), with their failure routes (for a stream, its position and DLQ).

    Raises:
        HandlerError: stream options on a handler of a queue that is not a stream.
    """
    declared = topology.queues[queue]
    dead_letter = dead_letter_route(queue, declared)
    definitions = {
        q.name: fingerprint(q.durable, q.arguments)
        for q in expand(Topology(queues={queue: declared})).queues
    }
    stream = None if spec is None else stream_route(topology, spec)
    return [
        Route(
            physical,
            queue,
            declared.retry,
            dead_letter,
            definitions.get(physical, "unknown"),
            stream,
        )
        for physical in physical_queues(topology, queue)
    ]


def stream_route(topology: Topology, spec: HandlerSpec) -> StreamRoute | None:
    """A stream handler's route (DESIGN.md §9); None off streams.

    Raises:
        HandlerError: stream options (``offset=`` …) on a queue that is not a stream.
    """
    declared = topology.queues[spec.queue]
    options = spec.options.stream
    if declared.type is not QueueType.STREAM:
        if options is not None:
            raise HandlerError(
                f"handler {spec.name}: offset=, consumer_name=, offsets= and retry= are for "
                f"stream queues; {spec.queue!r} is a {declared.type.value} queue (its "
                "retries are set in the topology)"
            )
        return None
    if spec.options.batch is not None or spec.options.delivery != "at_least_once":
        raise HandlerError(
            f"handler {spec.name}: {spec.queue!r} is a stream; batch= and "
            "delivery='at_most_once' are not for stream handlers"
        )
    if spec.options.idempotency is not None or spec.options.circuit_breaker is not None:
        raise HandlerError(
            f"handler {spec.name}: {spec.queue!r} is a stream; idempotency= and "
            "circuit_breaker= are not for stream handlers (a stored position already "
            "keeps a restart from re-running settled events)"
        )
    if options is None:
        options = StreamOptions()
    name = options.consumer_name or getattr(spec.func, "__name__", None) or spec.name
    return StreamRoute(
        spec.queue,
        name,
        dead_letter_queue_name(spec.queue, name),
        options.retry,
        options.offset,
        options.offsets,
    )


def default_prefetch(topology: Topology, spec: HandlerSpec, fallback: int) -> int:
    """The handler's prefetch; 1 for ordered queues (partitions or single active
    consumer), where running two deliveries at once would reorder them."""
    if spec.prefetch is None and topology.queues[spec.queue].type is QueueType.STREAM:
        return DEFAULT_STREAM_PREFETCH
    if spec.prefetch is not None:
        queue = topology.queues[spec.queue]
        if spec.prefetch > 1 and (queue.partitions or queue.single_active_consumer):
            log.warning(
                "prefetch > 1 on an ordered queue: deliveries may run out of order",
                queue=spec.queue,
                prefetch=spec.prefetch,
            )
        return spec.prefetch
    queue = topology.queues[spec.queue]
    return 1 if queue.partitions or queue.single_active_consumer else fallback


def stuck_after(spec: HandlerSpec, settings: Settings) -> float:
    """Seconds after which a delivery still in the worker means its consumer is stuck.

    Far beyond what a healthy delivery can take: twice the handler's timeout (the
    shutdown timeout for a handler without one), plus the longest a settle may wait
    (two copies each up to ``publish_timeout``, the pause before a requeue) and, with an
    idempotency store, the longest wait for another worker's lease.
    """
    limit = 2 * (spec.timeout or settings.shutdown_timeout)
    limit += 2 * settings.publish_timeout + COPY_FAILURE_PAUSE + 1.0
    if spec.options.idempotency is not None:
        limit += max(60.0, 2 * (spec.timeout or 0))
    return limit


class Worker:
    """Runs consumers for a set of handlers until stopped, reconnecting as needed."""

    def __init__(
        self,
        topology: Topology,
        declarations: Declarations | None,
        specs: Sequence[HandlerSpec],
        settings: Settings,
        publisher: Publisher,
        *,
        prefetch: int,
        exit_on_cancel: bool = False,
        observer: OutcomeObserver | None = None,
        tracer: DeliveryTracer | None = None,
        middlewares: Sequence[Middleware] = (),
        on_settled: Sequence[SettledObserver] = (),
        observers: Sequence[DeliveryObserver] = (),
    ) -> None:
        self.topology = topology
        self.declarations = declarations
        self.settings = settings
        self.exit_on_cancel = exit_on_cancel
        sync_slots = sum(s.prefetch or prefetch for s in specs if not s.is_async)
        self.executor = ThreadPoolExecutor(
            max_workers=max(4, min(sync_slots, 256)), thread_name_prefix="rabbitflow-handler"
        )
        self.consumers = [
            QueueConsumer(
                spec,
                route,
                prefetch=default_prefetch(topology, spec, prefetch),
                publisher=publisher,
                executor=self.executor,
                on_cancelled=self._consumer_cancelled,
                observer=observer,
                tracer=tracer,
                on_channel_lost=self._consumer_channel_lost,
                stuck_after=stuck_after(spec, settings),
                middlewares=middlewares,
                observers=observers,
                on_settled=on_settled,
            )
            for spec in specs
            for route in routes_for(topology, spec.queue, spec)
        ]
        self.watchdog = LoopWatchdog(
            {s.func.__code__: s.name for s in specs if s.is_async and hasattr(s.func, "__code__")}
        )
        self.connection: AbstractConnection | None = None
        self.failed: RabbitflowError | None = None
        """Set when the worker gave up (a cancelled consumer with ``exit_on_cancel``)."""
        self._stopping = False
        self._lost = False
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._cancelled: set[QueueConsumer] = set()
        self._broken: set[QueueConsumer] = set()
        """Consumers whose channel the broker closed (the connection still up)."""
        self.stopped = asyncio.Event()

    @property
    def connected(self) -> bool:
        """The consuming connection is open (and not known to be lost)."""
        return not self._lost and is_open(self.connection)

    @property
    def healthy(self) -> bool:
        """Connected, and every consumer consuming (or paused by its circuit breaker) and
        none stuck."""
        return self.connected and all(
            c.state != "down" and c.stuck_for() is None for c in self.consumers
        )

    async def start(self, before_consuming: Callable[[], Awaitable[None]] | None = None) -> None:
        """Connect, declare (when asked), run ``before_consuming`` (the app's lifespan),
        start every consumer.

        Raises:
            BrokerUnavailable: when the broker cannot be reached at start (fail fast).
            DeclareConflict: when the topology conflicts with the broker.
            Exception: whatever ``before_consuming`` raised; no consumer started and the
                connection is closed.
        """
        await self._apply_policies()
        await self._open(before_consuming)
        self.watchdog.start()
        self._supervisor = asyncio.create_task(self._supervise(), name="rabbitflow-supervisor")

    async def _open(self, before_consuming: Callable[[], Awaitable[None]] | None = None) -> None:
        connection = await connect_with(self.settings, name="rabbitflow-worker")
        try:
            connection.close_callbacks.add(self._connection_closed)
            await self._declare(connection)
            if before_consuming is not None:
                await before_consuming()
            if self.settings.gc_tuning:
                # After the lifespan (what it made is frozen too), before the first
                # delivery: the one full collection it costs is no pause in consuming.
                tune_for_worker()
            for consumer in self.consumers:
                await consumer.start(connection)
        except BaseException:
            connection.close_callbacks.discard(self._connection_closed)
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self.connection = connection
        log.info("worker connected", consumers=len(self.consumers))

    async def _apply_policies(self) -> None:
        # Once at start, before the queues: the broker applies a policy to queues declared
        # after it as to those before. A reconnect does not re-apply (policies are not
        # lost with a connection).
        if self.declarations is None or not self.declarations.policies:
            return
        if self.settings.urls[0].startswith("memory:"):
            log.info("policies not applied: the in-memory broker has no management API")
            return
        async with management_client(self.settings) as api:
            results = await apply_policies(
                api, vhost_of(self.settings.urls[0]), self.declarations.policies
            )
        for result in results:
            if result.status != "exists":
                log.info("policy applied", policy=result.name, status=result.status)

    async def _declare(self, connection: AbstractConnection) -> None:
        if self.declarations is None:
            return
        # A queue `rabbitflow migrate` is recreating must not come back under the old
        # definition: refuse at start, and retry with back-off on a reconnect.
        busy = await migrations_in_progress(
            connection, [q.name for q in self.declarations.queues if not q.worker_owned]
        )
        if busy:
            raise MigrationError(
                f"queue {busy[0]!r} is being migrated by rabbitflow migrate "
                f"({busy[0]}.migrate exists): let it finish (run it again if it was "
                "interrupted), then start the worker"
            )
        # On every (re)connect: exclusive and auto-delete queues died with the old
        # connection, and a queue deleted meanwhile comes back (declaring is idempotent).
        found = conflicts(await declare(connection, self.declarations, include_worker_owned=True))
        for conflict in found[1:]:
            log.error("topology conflicts with the broker", reason=str(conflict))
        if found:
            raise found[0]

    def _connection_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        if not self._stopping:
            log.warning("connection lost", reason=str(exc) if exc else "closed")
            # aio-pika runs close callbacks before `is_closed` turns true: remember it.
            self._lost = True
            self._wake.set()

    def _consumer_cancelled(self, consumer: QueueConsumer) -> None:
        self._cancelled.add(consumer)
        self._wake.set()

    def _consumer_channel_lost(self, consumer: QueueConsumer) -> None:
        self._broken.add(consumer)
        self._wake.set()

    async def _supervise(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            if self._lost or not is_open(self.connection):
                await self._reconnect()
            elif self._cancelled or self._broken:
                await self._resume_cancelled()

    async def _reconnect(self) -> None:
        self._lost = False
        self.connection = None
        for consumer in self.consumers:
            await consumer.close()
        self._cancelled.clear()
        self._broken.clear()
        delay = RECONNECT_MIN
        attempt = 0
        log.warning("reconnecting")
        while not self._stopping:
            attempt += 1
            try:
                await self._open()
                log.info("reconnected; consumers resumed", attempts=attempt)
                return
            except (BrokerUnavailable, ConnectionError, OSError, RabbitflowError) as exc:
                log.info(
                    "reconnect attempt failed", attempt=attempt, retry_in_s=delay, reason=str(exc)
                )
            except Exception as exc:  # aiormq raises assorted errors mid-handshake
                log.info(
                    "reconnect attempt failed",
                    attempt=attempt,
                    retry_in_s=delay,
                    reason=f"{type(exc).__name__}: {exc}",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _resume_cancelled(self) -> None:
        cancelled, self._cancelled = self._cancelled, set()
        broken, self._broken = self._broken, set()
        names = sorted(c.route.queue for c in cancelled)
        if cancelled and self.exit_on_cancel:
            self.failed = RabbitflowError(
                f"consumer of queue(s) {', '.join(names)} cancelled "
                "by the broker (queue deleted?); exiting"
            )
            self.stopped.set()
            return
        assert self.connection is not None
        restart = cancelled | broken
        names = sorted(c.route.queue for c in restart)
        try:
            if cancelled:
                await self._declare(self.connection)
            for consumer in restart:
                await consumer.close()
                await consumer.start(self.connection)
            log.warning(
                "consumer resumed" + (" (queue redeclared)" if cancelled else ""), queues=names
            )
        except Exception as exc:
            log.error("could not resume consumers", queues=names, reason=str(exc))
            self._cancelled |= cancelled
            self._broken |= broken
            await asyncio.sleep(RECONNECT_MAX)
            self._wake.set()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: cancel consumers, finish in-flight work (up to ``timeout``
        seconds), requeue the rest, close the connection."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        log.info("shutting down", timeout_s=limit)
        await asyncio.gather(*(c.stop(limit) for c in self.consumers))
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.connection is not None and not self.connection.is_closed:
            with contextlib.suppress(Exception):
                await self.connection.close()
        await self.watchdog.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        settled: collections.Counter[str] = collections.Counter()
        for consumer in self.consumers:
            settled.update(consumer.settled_counts)
        log.info(
            "worker stopped",
            settled=sum(settled.values()),
            **{outcome: settled[outcome] for outcome in _OUTCOMES},
            **{k: v for k, v in settled.items() if k not in _OUTCOMES},
        )
        self.stopped.set()
