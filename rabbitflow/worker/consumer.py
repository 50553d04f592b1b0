"""One queue's consumer: flow control only (DESIGN.md §2, §7).

It owns the channel, its prefetch (qos), the in-flight bound and the coalesced acks,
pauses for an open circuit breaker, stops and restarts on cancel, close and reconnect.
What happens to one delivery — middlewares, handler, decision, settle, observers — is
the `Pipeline`'s (rabbitflow/worker/pipeline.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, cast

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from rabbitflow.amqp.publish import Publisher
from rabbitflow.amqp.transport import (
    CONNECTION_LOST,
    GONE_OR_SILENT,
    deliver_directly,
    delivery_tag,
)
from rabbitflow.topology.fingerprint import consumer_tag
from rabbitflow.worker.acks import Acker
from rabbitflow.worker.at_most_once import AtMostOnceRuns
from rabbitflow.worker.breaker import BreakerState, CircuitBreaker
from rabbitflow.worker.handler import HandlerSpec, start_argument
from rabbitflow.worker.hooks import DeliveryTracer, OutcomeObserver
from rabbitflow.worker.idempotency.middleware import IdempotencyMiddleware
from rabbitflow.worker.message import Message
from rabbitflow.worker.observers import (
    BreakerMiddleware,
    Counts,
    MetricsObserver,
    OutcomeLog,
    TracingObserver,
)
from rabbitflow.worker.outcome import describe
from rabbitflow.worker.pipeline import (
    Delivery,
    DeliveryObserver,
    Middleware,
    Pipeline,
    SettledObserver,
)
from rabbitflow.worker.settle import COPY_FAILURE_PAUSE, Route, Settler
from rabbitflow.worker.stream import STREAM_OFFSET, StreamCursor, offset_of

__all__ = ["COPY_FAILURE_PAUSE", "QueueConsumer", "Route", "channel_close_reason"]

log = structlog.get_logger("rabbitflow.worker")


def channel_close_reason(exc: BaseException) -> str:
    """Why the broker closed a consumer's channel, with the likely fix when known."""
    text = " ".join(str(a) for a in exc.args) if exc.args else type(exc).__name__
    if "acknowledgement" in text and "timed out" in text:
        return (
            f"{text}: a handler held a delivery longer than the broker's "
            "consumer_timeout; raise consumer_timeout or make the handler faster "
            "(the message is redelivered)"
        )
    return text


class QueueConsumer:
    """Consumes one queue with one handler on a channel of its own."""

    def __init__(
        self,
        spec: HandlerSpec,
        route: Route,
        *,
        prefetch: int,
        publisher: Publisher,
        executor: Executor,
        on_cancelled: Callable[[QueueConsumer], None],
        observer: OutcomeObserver | None = None,
        tracer: DeliveryTracer | None = None,
        on_channel_lost: Callable[[QueueConsumer], None] | None = None,
        stuck_after: float | None = None,
        middlewares: Sequence[Middleware] = (),
        observers: Sequence[DeliveryObserver] = (),
        on_settled: Sequence[SettledObserver] = (),
    ) -> None:
        self.spec = spec
        self.route = route
        self.prefetch = prefetch
        self.publisher = publisher
        self.executor = executor
        self.on_cancelled = on_cancelled
        self.on_channel_lost = on_channel_lost or on_cancelled
        self.observer = observer
        self.tracer = tracer
        self.active = False
        self._in_flight = 0
        """Deliveries in the worker (at-most-once ones are counted by their runs)."""
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None
        self._acker: Acker | None = None
        self._stopping = False
        self._tasks: dict[asyncio.Task[Any], float] = {}
        """Deliveries in the worker now → when each arrived (monotonic)."""
        self.stuck_after = stuck_after
        """Seconds after which a delivery still in the worker means the consumer is stuck
        (`/healthz` then fails); None: never."""
        self.settled_counts: collections.Counter[str] = collections.Counter()
        """Deliveries settled since start, by outcome (logged when the worker stops)."""
        self._grouped = spec.options.delivery == "at_most_once" or spec.options.batch is not None
        """At-most-once and batch deliveries go to `_arrive` as they are read, and start
        tasks per group of deliveries; the others run in a task each (aiormq's)."""
        self._batch: list[Delivery] = []
        """A batch handler's deliveries not handed over yet."""
        self._batch_timer: asyncio.TimerHandle | None = None
        self._turn: asyncio.Lock | None = asyncio.Lock() if route.stream is not None else None
        """A stream handler: one event at a time, in stream order (the lock is FIFO)."""
        self._cursor: StreamCursor | None = None
        """A stream handler: the current channel's settled offsets and stored position."""
        self._connection: AbstractConnection | None = None
        self._stream_start: Any = None
        """The ``x-stream-offset`` argument of the next basic.consume."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = log.bind(queue=route.queue, handler=spec.name)
        self._at_most_once: AtMostOnceRuns | None = (
            AtMostOnceRuns(
                prefetch,
                run=self._run_at_most_once,
                spawn=self._later,
                tasks=self._tasks,
                late_ack=self._late_ack,
                log=self._log,
            )
            if spec.options.delivery == "at_most_once"
            else None
        )
        """At-most-once: the deliveries waiting for a run (unacked) and running."""
        self.breaker: CircuitBreaker | None = spec.options.circuit_breaker
        self.pipeline = self._pipeline(middlewares, observers, on_settled)
        self.paused = False
        """True while an open circuit breaker holds consumption (on purpose)."""
        self._resume: asyncio.Task[None] | None = None
        if self.breaker is not None:
            self.breaker.add_listener(self._breaker_changed)

    def _pipeline(
        self,
        middlewares: Sequence[Middleware],
        observers: Sequence[DeliveryObserver],
        on_settled: Sequence[SettledObserver],
    ) -> Pipeline:
        """rabbitflow's own steps around the user's: idempotency outermost, then the
        circuit breaker; the outcome log, the counts, metrics and tracing observe before
        other observers."""
        options = self.spec.options
        chain: list[Middleware] = []
        if options.idempotency is not None:
            lease = max(60.0, 2 * (self.spec.timeout or 0))
            chain.append(
                IdempotencyMiddleware(
                    options.idempotency, options.idempotency_key, lease=lease, log=self._log
                )
            )
        if self.breaker is not None:
            chain.append(BreakerMiddleware(self.breaker))
        chain.extend(middlewares)
        own: list[DeliveryObserver] = [OutcomeLog(self._log), Counts(self.settled_counts)]
        if self.observer is not None:
            own.append(MetricsObserver(self.route.logical, self.observer))
        if self.tracer is not None:
            own.append(TracingObserver(self.tracer))
        settler = Settler(
            self.route,
            self.publisher,
            ack=self._ack,
            nack=self._nack,
            log=self._log,
            declare_queue=self._declare_dead_letters,
            settle_offset=self._offset_settled,
        )
        return Pipeline(
            self.spec,
            self.route,
            settler,
            executor=self.executor,
            middlewares=chain,
            observers=[*own, *observers],
            on_settled=on_settled,
            tracer=self.tracer,
        )

    @property
    def in_flight(self) -> int:
        """Deliveries in the worker now: running, in a batch, or waiting for a run."""
        amo = self._at_most_once
        return self._in_flight if amo is None else self._in_flight + amo.in_worker

    @property
    def state(self) -> str:
        """``consuming``, ``paused`` (an open circuit breaker: deliberate) or ``down``."""
        raw = self._raw
        if not self.active or raw is None or raw.is_closed:
            return "down"
        return "paused" if self.paused else "consuming"

    def stuck_for(self) -> float | None:
        """How long the oldest delivery has been in the worker, when that is longer than
        `stuck_after` (a handler that ignores cancellation, a settle that hangs)."""
        if self.stuck_after is None or not self._tasks:
            return None
        # list() copies under the GIL: /healthz reads this from its own thread.
        oldest = min(list(self._tasks.values()), default=None)
        if oldest is None:
            return None
        age = time.monotonic() - oldest
        return age if age > self.stuck_after else None

    async def start(self, connection: AbstractConnection) -> None:
        """Open a channel, set its prefetch and start consuming."""
        self._stopping = False
        self._connection = connection
        self._channel = await connection.channel(publisher_confirms=False)
        self._channel.close_callbacks.add(self._channel_closed)
        raw = await self._channel.get_underlay_channel()
        await raw.basic_qos(prefetch_count=self.prefetch)
        raw.on_consumer_cancel_callbacks.add(self._broker_cancelled)
        self._raw = raw
        self._acker = Acker(
            raw, self._late_ack, immediate=self.prefetch == 1, hold=min(self.prefetch // 4, 250)
        )
        if self.route.stream is not None:
            await self._attach(raw)
        if self._at_most_once is not None:
            self._at_most_once.forget()  # a lost channel's: the broker requeued them with it
        if self._grouped and not deliver_directly(raw, self._arrive):
            self._log.debug("channel cannot deliver directly: a task per delivery")
        self.active = True
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            self._pause()
            return
        await self._consume(self.prefetch)
        self._log.info("consumer started", prefetch=self.prefetch)

    async def _consume(self, prefetch: int) -> None:
        assert self._raw is not None
        await self._raw.basic_qos(prefetch_count=prefetch)
        # The tag names rabbitflow and the queue definition: `rabbitflow migrate` reads
        # it from the broker's consumer list to find workers of an old definition.
        tag = consumer_tag(self.route.definition, uuid.uuid4().hex[:12])
        arguments = None if self._cursor is None else {STREAM_OFFSET: self._stream_start}
        ok = await self._raw.basic_consume(
            self.route.queue,
            self._arrival if self._grouped else self._on_delivery,
            no_ack=False,
            consumer_tag=tag,
            arguments=arguments,
        )
        self._tag = ok.consumer_tag
        self.paused = False

    # -- circuit breaker -----------------------------------------------------------

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        self._log.warning("circuit breaker changed", old=old.value, new=new.value)
        if new is BreakerState.OPEN and not self._stopping:
            self._pause()
        elif new is BreakerState.CLOSED and old is BreakerState.HALF_OPEN:
            asyncio.get_running_loop().create_task(self._restore_prefetch())

    def _pause(self) -> None:
        """Stop consuming while the breaker is open: messages wait in the queue instead
        of burning their retries against a failing downstream."""
        if self._resume is not None and not self._resume.done():
            return
        self._resume = asyncio.get_running_loop().create_task(self._pause_then_try_one())

    async def _pause_then_try_one(self) -> None:
        assert self.breaker is not None
        raw, tag = self._raw, self._tag
        self.paused, self._tag = True, None
        if raw is not None and not raw.is_closed and tag is not None:
            with contextlib.suppress(*CONNECTION_LOST):
                await raw.basic_cancel(tag)
        wait = self.breaker.seconds_until_half_open()
        self._log.warning("circuit open: consuming paused", resume_in_s=round(wait, 3))
        await asyncio.sleep(wait)
        if self._stopping or self._raw is None or self._raw.is_closed:
            return
        if self.breaker.state is BreakerState.HALF_OPEN:
            # One message at a time until a success closes the breaker again.
            await self._consume(1)
            self._log.info("circuit half-open: trying one message")

    async def _restore_prefetch(self) -> None:
        raw = self._raw
        if raw is not None and not raw.is_closed:
            with contextlib.suppress(*CONNECTION_LOST):
                await raw.basic_qos(prefetch_count=self.prefetch)
        self._log.info("circuit closed: consuming at full prefetch", prefetch=self.prefetch)

    def _broker_cancelled(self, frame: Basic.Cancel) -> None:
        if frame.consumer_tag != self._tag or self._stopping:
            return
        self.active = False
        self._log.error("consumer cancelled by the broker (was the queue deleted?)")
        self.on_cancelled(self)

    def _channel_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        # The broker closes a channel (not the connection) for a channel-level error, most
        # often a delivery held longer than its consumer_timeout. The connection stays up,
        # so without this the worker would sit idle on a dead channel.
        if (
            self._stopping
            or not self.active
            or not isinstance(exc, aiormq.exceptions.ChannelClosed)
        ):
            return
        self.active = False
        self._log.error(
            "channel closed by the broker; its unacked deliveries go back to the "
            "queue and the consumer restarts",
            reason=channel_close_reason(exc),
        )
        self.on_channel_lost(self)

    async def stop(self, timeout: float) -> None:
        """Stop consuming, let in-flight handlers finish, give the rest back.

        Consumers are cancelled first, so no new delivery starts; handlers running after
        ``timeout`` seconds are cancelled and their messages requeued, never dead-lettered.
        """
        self._stopping = True
        self.active = False
        if self._at_most_once is not None:
            self._at_most_once.give_back()  # none starts now; later arrivals go back too
        if self._resume is not None:
            self._resume.cancel()
        raw = self._raw
        if raw is not None and not raw.is_closed and self._tag is not None:
            with contextlib.suppress(*GONE_OR_SILENT):
                await asyncio.wait_for(raw.basic_cancel(self._tag), timeout=5)
        self._flush_batch()  # a partial batch is handed over, not held
        await self._wait_for_tasks(timeout)
        if self._cursor is not None:
            await self._cursor.close()  # the last settled position stored and acked
        await self.close()

    async def _wait_for_tasks(self, timeout: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                self._log.warning(
                    "shutdown timeout: requeueing unfinished deliveries",
                    count=len(pending),
                    timeout_s=timeout,
                )
                await asyncio.wait(pending, timeout=5)

    async def close(self) -> None:
        """Close the channel without waiting for handlers (the connection is gone)."""
        self.active = False
        if self._acker is not None:
            self._acker.flush()
            await asyncio.sleep(0)  # let the last ack frame reach the write queue
        channel, self._channel, self._raw = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*GONE_OR_SILENT):
                await asyncio.wait_for(channel.close(), timeout=5)

    async def _on_delivery(self, raw: DeliveredMessage) -> None:
        # aiormq runs each delivery in a task of its own; the channel's prefetch bounds
        # how many exist at once.
        tag = delivery_tag(raw)
        channel = raw.channel
        if self._turn is not None:
            await self._stream_event(raw, channel, tag, self._turn)
            return
        acker = self._acker
        if acker is not None and acker.channel is channel:
            acker.delivered(tag)
        if self._stopping:
            await self._nack(channel, tag, requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks[task] = time.monotonic()
        self._in_flight += 1
        try:
            await self.pipeline.run(Delivery(raw, self._message(raw, tag), channel, tag))
        except Exception as exc:
            await self._unsettled(raw, channel, tag, exc)
        finally:
            self._in_flight -= 1
            if task is not None:
                self._tasks.pop(task, None)

    # -- at-most-once and batch: deliveries taken as they are read ------------------

    def _arrive(self, raw: DeliveredMessage) -> None:
        """An at-most-once or batch delivery, as the channel reads it (`deliver_directly`;
        on a channel that cannot, from `_arrival`'s task)."""
        tag = delivery_tag(raw)
        channel = raw.channel
        if self._at_most_once is not None:
            self._at_most_once.arrive(raw)
            return
        acker = self._acker
        if acker is not None and acker.channel is channel:
            acker.delivered(tag)
        if self._stopping:
            self._later(self._nack(channel, tag, requeue=True))
            return
        try:
            self._add_to_batch(Delivery(raw, self._message(raw, tag), channel, tag))
        except Exception as exc:  # as in _on_delivery: never left unsettled
            self._later(self._unsettled(raw, channel, tag, exc))

    async def _arrival(self, raw: DeliveredMessage) -> None:
        self._arrive(raw)

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = time.monotonic()
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    async def _run_at_most_once(self, raw: DeliveredMessage) -> None:
        """One at-most-once delivery, acked already (`AtMostOnceRuns`)."""
        tag = delivery_tag(raw)
        channel = raw.channel
        try:
            await self.pipeline.run(Delivery(raw, self._message(raw, tag), channel, tag))
        except Exception as exc:
            await self._unsettled(raw, channel, tag, exc)

    # -- batch handlers (DESIGN.md §8) ----------------------------------------------

    def _add_to_batch(self, d: Delivery) -> None:
        batch = self.spec.options.batch
        assert batch is not None
        self._batch.append(d)
        self._in_flight += 1
        if len(self._batch) >= batch.max_size:
            self._flush_batch()
        elif len(self._batch) == 1:
            loop = asyncio.get_running_loop()
            self._batch_timer = loop.call_later(batch.seconds, self._flush_batch)

    def _flush_batch(self) -> None:
        """Hand the batch over now (full, its max_wait is up, or shutdown)."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        # Held since its first delivery arrived (what /healthz's stuck check measures).
        waited = time.perf_counter() - min(d.started for d in batch)
        self._tasks[task] = time.monotonic() - waited

    async def _run_batch(self, batch: list[Delivery]) -> None:
        held = len(batch)
        # Deliveries of a channel that closed meanwhile were requeued by the broker and
        # come again on the new one: running them here would only duplicate them.
        batch = [d for d in batch if not d.channel.is_closed]
        try:
            if batch:
                await self.pipeline.run_batch(batch)
        except Exception as exc:
            for d in batch:
                await self._unsettled(d.raw, d.channel, d.tag, exc)
        finally:
            self._in_flight -= held
            task = asyncio.current_task()
            if task is not None:
                self._tasks.pop(task, None)

    # -- stream handlers (DESIGN.md §9) ---------------------------------------------

    async def _attach(self, raw: aiormq.abc.AbstractChannel) -> None:
        """Where this channel's consumer attaches: right after the last settled event
        (this process's, else the store's), else the handler's ``offset=``."""
        stream = self.route.stream
        assert stream is not None
        position = None if self._cursor is None else self._cursor.position
        if position is None and stream.offsets is not None:
            position = await stream.offsets.load(stream.consumer_name, stream.stream)
        self._stream_start = start_argument(stream.offset) if position is None else position + 1
        self._cursor = StreamCursor(raw, stream, position, log=self._log)
        self._log.info(
            "stream consumer attaching",
            consumer_name=stream.consumer_name,
            position=position,
            start=str(self._stream_start),
        )

    async def _stream_event(
        self, raw: DeliveredMessage, channel: Any, tag: int, turn: asyncio.Lock
    ) -> None:
        """A stream event: its offset is marked started at once (deliveries arrive in
        stream order), then it waits for its turn; one runs at a time. An event not run
        (stopping, or its channel gone) never settles, so no stored position passes it."""
        cursor = self._cursor
        offset = offset_of(raw.header.properties.headers)
        if cursor is None or cursor.channel is not channel or self._stopping:
            return
        if offset is None:
            self._log.error("a stream delivery without x-stream-offset; not run", tag=tag)
            return
        if not cursor.begin(offset, tag):
            return
        async with turn:
            if channel.is_closed or self._stopping or cursor is not self._cursor:
                return
            task = asyncio.current_task()
            if task is not None:
                self._tasks[task] = time.monotonic()
            self._in_flight += 1
            try:
                await self.pipeline.run(
                    Delivery(raw, self._message(raw, tag, offset), channel, tag)
                )
            except Exception as exc:
                # A bug: the event does not settle, so the position holds here and a
                # restart runs it again; never skipped.
                self._log.error(
                    "stream event failed to settle; the position holds before it",
                    offset=offset,
                    error=describe(exc),
                    exc_info=exc,
                )
            finally:
                self._in_flight -= 1
                if task is not None:
                    self._tasks.pop(task, None)

    def _offset_settled(self, d: Delivery) -> None:
        cursor = self._cursor
        offset = d.message.stream_offset
        if cursor is not None and cursor.channel is d.channel and offset is not None:
            cursor.settle(offset)

    async def _declare_dead_letters(self, name: str) -> None:
        """Declare a stream consumer's DLQ (a durable quorum queue) on a channel of its
        own: a queue of that name with other arguments closes only that channel."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("not connected")
        channel = await connection.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*GONE_OR_SILENT):
                    await channel.close()

    async def _unsettled(
        self, raw: DeliveredMessage, channel: Any, tag: int, exc: Exception
    ) -> None:
        """The last resort of a delivery whose processing raised: a bug in rabbitflow or a
        value nothing anticipated. Left unsettled it would hold its prefetch slot and the
        coalesced acks of every later delivery forever, so it is nacked without requeue
        (the broker dead-letters it through the queue's arguments) and logged."""
        acker = self._acker
        pending = acker is not None and acker.channel is channel and acker.pending(tag)
        props = raw.header.properties
        self._log.error(
            "delivery failed to settle; nacked without requeue (the broker dead-letters it)"
            if pending
            else "error after the delivery was settled",
            message_id=props.message_id,
            correlation_id=props.correlation_id,
            outcome="nack" if pending else None,
            error=describe(exc),
            exc_info=exc,
        )
        if pending and not channel.is_closed:
            await self._nack(channel, tag, requeue=False)
            with contextlib.suppress(Exception):
                self._settled("nack", exc)

    def _message(
        self, raw: DeliveredMessage, tag: int, stream_offset: int | None = None
    ) -> Message:
        props = raw.header.properties
        delivery = cast(Basic.Deliver, raw.delivery)
        return Message(
            body=raw.body,
            headers=props.headers or {},
            exchange=delivery.exchange,
            routing_key=delivery.routing_key or "",
            queue=self.route.logical,
            message_id=props.message_id,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            content_type=props.content_type,
            timestamp=props.timestamp,
            redelivered=bool(delivery.redelivered),
            delivery_tag=tag,
            priority=props.priority,
            consumed=self.route.queue,
            stream_offset=stream_offset,
        )

    async def _ack(self, channel: Any, tag: int) -> None:
        acker = self._acker
        if acker is not None and acker.channel is channel and not acker.ack(tag):
            return  # coalesced into one basic.ack(multiple=True) per loop turn
        try:
            await channel.basic_ack(tag, wait=False)
        except CONNECTION_LOST as exc:
            self._late_ack(exc, tag)

    def _late_ack(self, exc: BaseException, tag: int | None = None) -> None:
        # The broker requeued the message when the channel died: it will be delivered
        # again (at-least-once), so the late ack is dropped.
        self._log.warning("late ack dropped: channel closed", delivery_tag=tag, reason=str(exc))

    async def _nack(self, channel: Any, tag: int, *, requeue: bool) -> None:
        acker = self._acker
        try:
            await channel.basic_nack(tag, requeue=requeue, wait=False)
        except CONNECTION_LOST:
            self._log.warning("late nack dropped: channel closed", delivery_tag=tag)
        if acker is not None and acker.channel is channel:
            acker.settled(tag)

    def _settled(self, outcome: str, error: BaseException | None) -> None:
        # Only for a delivery the pipeline could not settle (`_unsettled`).
        self.settled_counts[outcome] += 1
        if self.observer is not None:
            self.observer(self.route.logical, outcome, None, error=error)
