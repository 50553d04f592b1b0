"""One queue's consumer: its own channel and prefetch, the handler run per delivery, and
the delivery settled by the outcome (DESIGN.md §2).

The order of settling is the at-least-once guarantee: a retry or dead-letter copy is
confirmed by the broker *before* the original is acked, so a crash in between can
duplicate a message but never lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, cast

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from rabbitflow.amqp.publish import Publisher
from rabbitflow.compression import inflate
from rabbitflow.errors import BodyDecodeError, HandlerTimeout, PublishError, Unroutable
from rabbitflow.topology.schema import RetryPolicy, retry_queue_name
from rabbitflow.worker.acks import Acker
from rabbitflow.worker.breaker import BreakerState, CircuitBreaker
from rabbitflow.worker.codec import encode
from rabbitflow.worker.handler import HandlerSpec
from rabbitflow.worker.hooks import DeliveryTracer, OutcomeObserver, message_fields
from rabbitflow.worker.idempotency import IdempotencyStore, acquire
from rabbitflow.worker.message import Message
from rabbitflow.worker.outcome import (
    Action,
    Decision,
    Reject,
    decide,
    describe,
    failure_headers,
)

log = structlog.get_logger("rabbitflow.worker")

_CHANNEL_GONE = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)
COPY_FAILURE_PAUSE = 1.0
"""Seconds a delivery waits before it is requeued because its retry or dead-letter copy
could not be confirmed: it keeps its prefetch slot, so a broken broker slows the worker
down instead of spinning the message."""


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


@dataclass(frozen=True)
class Route:
    """Where a physical queue's failures go."""

    queue: str
    """The queue consumed (a work queue, or one partition of it)."""
    logical: str
    """The queue the handler was registered for (what `Message.queue` says)."""
    retry: RetryPolicy | None
    dead_letter: tuple[str, str] | None
    """(exchange, routing key) for dead letters, or None to nack without requeue."""


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
        self.in_flight = 0
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None
        self._acker: Acker | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = log.bind(queue=route.queue, handler=spec.name)
        # Successes are logged at debug level; skip building their fields when filtered.
        enabled = getattr(self._log, "is_enabled_for", None)
        self._log_successes = enabled is None or bool(enabled(logging.DEBUG))
        self.store: IdempotencyStore | None = spec.options.get("idempotency")
        self._key_of: Callable[[Message], str | None] = spec.options.get("idempotency_key") or (
            lambda m: m.message_id
        )
        self._lease = max(60.0, 2 * (spec.timeout or 0))
        self._limit = publisher.max_message_size
        self._raw_ok = spec.body_type is bytes
        self.breaker: CircuitBreaker | None = spec.options.get("circuit_breaker")
        self.paused = False
        """True while an open circuit breaker holds consumption (on purpose)."""
        self._resume: asyncio.Task[None] | None = None
        if self.breaker is not None:
            self.breaker.add_listener(self._breaker_changed)

    @property
    def state(self) -> str:
        """``consuming``, ``paused`` (an open circuit breaker: deliberate) or ``down``."""
        raw = self._raw
        if not self.active or raw is None or raw.is_closed:
            return "down"
        return "paused" if self.paused else "consuming"

    async def start(self, connection: AbstractConnection) -> None:
        """Open a channel, set its prefetch and start consuming."""
        self._stopping = False
        self._channel = await connection.channel(publisher_confirms=False)
        self._channel.close_callbacks.add(self._channel_closed)
        raw = await self._channel.get_underlay_channel()
        await raw.basic_qos(prefetch_count=self.prefetch)
        raw.on_consumer_cancel_callbacks.add(self._broker_cancelled)
        self._raw = raw
        self._acker = Acker(raw, self._late_ack, immediate=self.prefetch == 1)
        self.active = True
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            self._pause()
            return
        await self._consume(self.prefetch)
        self._log.info("consumer started", prefetch=self.prefetch)

    async def _consume(self, prefetch: int) -> None:
        assert self._raw is not None
        await self._raw.basic_qos(prefetch_count=prefetch)
        ok = await self._raw.basic_consume(self.route.queue, self._on_delivery, no_ack=False)
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
            with contextlib.suppress(*_CHANNEL_GONE):
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
            with contextlib.suppress(*_CHANNEL_GONE):
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
        if self._resume is not None:
            self._resume.cancel()
        raw = self._raw
        if raw is not None and not raw.is_closed and self._tag is not None:
            try:
                await asyncio.wait_for(raw.basic_cancel(self._tag), timeout=5)
            except (*_CHANNEL_GONE, TimeoutError):
                pass
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
        await self.close()

    async def close(self) -> None:
        """Close the channel without waiting for handlers (the connection is gone)."""
        self.active = False
        if self._acker is not None:
            self._acker.flush()
            await asyncio.sleep(0)  # let the last ack frame reach the write queue
        channel, self._channel, self._raw = self._channel, None, None
        if channel is not None and not channel.is_closed:
            try:
                await asyncio.wait_for(channel.close(), timeout=5)
            except (*_CHANNEL_GONE, TimeoutError):
                pass

    async def _on_delivery(self, raw: DeliveredMessage) -> None:
        # aiormq runs each delivery in a task of its own; the channel's prefetch bounds
        # how many exist at once.
        tag = cast(Basic.Deliver, raw.delivery).delivery_tag or 0
        channel = raw.channel
        acker = self._acker
        if acker is not None and acker.channel is channel:
            acker.delivered(tag)
        if self._stopping:
            await self._nack(channel, tag, requeue=True)
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.in_flight += 1
        try:
            message = self._message(raw, tag)
            if self.tracer is None:
                await self._process(raw, message, channel, tag)
            else:
                with self.tracer.delivery(message):
                    await self._process(raw, message, channel, tag)
        finally:
            self.in_flight -= 1
            if task is not None:
                self._tasks.discard(task)

    def _message(self, raw: DeliveredMessage, tag: int) -> Message:
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
        )

    async def _process(
        self, raw: DeliveredMessage, message: Message, channel: Any, tag: int
    ) -> None:
        props = raw.header.properties
        spec = self.spec
        started = time.perf_counter()
        key = None
        try:
            if self.store is not None:
                key = self._key_of(message)
                if key is not None and not await acquire(
                    self.store, key, lease=self._lease, poll_interval=0.05, max_wait=self._lease
                ):
                    self._log.info(
                        "duplicate skipped", **message_fields(message, "ack", None), key=key
                    )
                    await self._ack(channel, tag)
                    self._settled("ack", None)
                    return
            data = inflate(raw.body, props.content_encoding, limit=self._limit, raw_ok=self._raw_ok)
            body = spec.decoder(data, props.content_type) if spec.decoder else None
            result = await self._invoke(body, message)
        except asyncio.CancelledError:
            # Shutdown timeout or a lost channel: the message goes back untouched.
            elapsed = time.perf_counter() - started
            if key is not None and self.store is not None:
                await asyncio.shield(self.store.release(key))
            if not channel.is_closed:
                await asyncio.shield(self._nack(channel, tag, requeue=True))
            self._log.warning(
                "handler cancelled; requeued", **message_fields(message, "requeue", elapsed)
            )
            self._settled("requeue", elapsed)
            raise
        except Exception as exc:
            elapsed = time.perf_counter() - started
            if key is not None and self.store is not None:
                await self.store.release(key)
            if self.breaker is not None and not isinstance(exc, Reject | BodyDecodeError):
                self.breaker.record_failure()
            decision = decide(
                exc,
                attempt=message.attempt,
                retry=self.route.retry,
                dead_letters=self.route.dead_letter is not None,
            )
            await self._fail(raw, message, decision, exc, channel, tag, elapsed)
            return
        elapsed = time.perf_counter() - started
        if key is not None and self.store is not None:
            # Recorded before the ack: a crash in between redelivers a message the store
            # already knows, which is then skipped.
            await self.store.complete(key)
        if self.breaker is not None:
            self.breaker.record_success()
        if message.reply_to:
            await self._reply(message, result)
        await self._ack(channel, tag)
        if self._log_successes:
            self._log.debug("message handled", **message_fields(message, "ack", elapsed))
        self._settled("ack", elapsed)

    async def _invoke(self, body: Any, message: Message) -> Any:
        spec = self.spec
        if spec.is_async:
            if spec.timeout is None:
                return await spec.call(body, message)
            try:
                async with asyncio.timeout(spec.timeout):
                    return await spec.call(body, message)
            except TimeoutError:
                raise HandlerTimeout(f"handler exceeded its {spec.timeout:g}s timeout") from None
        # The thread runs in the delivery's context, so a sync handler's spans nest in the
        # consumer span (run_in_executor alone would drop it, unlike asyncio.to_thread).
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, context.run, spec.call, body, message
        )
        if spec.timeout is None:
            return await future
        try:
            # A thread cannot be cancelled: on timeout the message is retried and the
            # thread is left to finish on its own (documented).
            return await asyncio.wait_for(future, spec.timeout)
        except TimeoutError:
            raise HandlerTimeout(
                f"handler exceeded its {spec.timeout:g}s timeout (sync handler left running)"
            ) from None

    async def _fail(
        self,
        raw: DeliveredMessage,
        message: Message,
        decision: Decision,
        error: BaseException,
        channel: Any,
        tag: int,
        elapsed: float,
    ) -> None:
        if decision.action is Action.NACK:
            self._log.error(
                "handler failed; queue has no dead letters, nacking",
                **message_fields(message, "nack", elapsed),
                error=describe(error),
            )
            await self._nack(channel, tag, requeue=False)
            self._settled("nack", elapsed, error=error)
            return
        try:
            await self._publish_copy(raw, message, decision, error)
        except PublishError as exc:
            if decision.action is Action.RETRY and isinstance(exc, Unroutable):
                # The delay queue is gone: a dead letter is better than a lost message.
                decision = Decision(Action.DEAD_LETTER)
                try:
                    await self._publish_copy(raw, message, decision, error)
                except PublishError as again:
                    await self._copy_failed(channel, tag, again, message, error, elapsed)
                    return
            else:
                await self._copy_failed(channel, tag, exc, message, error, elapsed)
                return
        if decision.action is Action.RETRY:
            self._log.info(
                "handler failed; retrying",
                **message_fields(message, "retry", elapsed),
                error=describe(error),
                delay_ms=decision.delay_ms,
            )
        else:
            self._log.warning(
                "handler failed; dead-lettered",
                **message_fields(message, "dead_letter", elapsed),
                error=describe(error),
            )
        await self._ack(channel, tag)
        self._settled(decision.action.value, elapsed, delay_ms=decision.delay_ms, error=error)

    async def _copy_failed(
        self,
        channel: Any,
        tag: int,
        exc: Exception,
        message: Message,
        error: BaseException,
        elapsed: float,
    ) -> None:
        self._log.error(
            "could not publish the retry/dead-letter copy; requeueing",
            **message_fields(message, "requeue", elapsed),
            error=describe(error),
            reason=str(exc),
        )
        await asyncio.sleep(COPY_FAILURE_PAUSE)
        await self._nack(channel, tag, requeue=True)
        self._settled("requeue", elapsed, error=error)

    async def _publish_copy(
        self, raw: DeliveredMessage, message: Message, decision: Decision, error: BaseException
    ) -> None:
        props = raw.header.properties
        delivery = cast(Basic.Deliver, raw.delivery)
        retrying = decision.action is Action.RETRY
        headers = failure_headers(
            props.headers,
            queue=self.route.logical,
            attempt=message.attempt + 1 if retrying else message.attempt,
            error=error,
            exchange=delivery.exchange,
            routing_key=delivery.routing_key or "",
            with_traceback=not retrying,
        )
        copy = Basic.Properties(
            content_type=props.content_type,
            content_encoding=props.content_encoding,
            headers=headers,
            delivery_mode=props.delivery_mode,
            priority=props.priority,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            expiration=props.expiration,
            message_id=props.message_id,
            timestamp=props.timestamp,
            message_type=props.message_type,
            app_id=props.app_id,
            # user_id is dropped: the broker checks it against the publishing user.
        )
        if retrying:
            assert decision.delay_ms is not None
            exchange, key = "", retry_queue_name(self.route.queue, decision.delay_ms)
        else:
            assert self.route.dead_letter is not None
            exchange, key = self.route.dead_letter
        await self.publisher.send(exchange, key, raw.body, copy, mandatory=True)

    async def _reply(self, message: Message, result: Any) -> None:
        body, content_type = encode(result)
        props = Basic.Properties(
            content_type=content_type, correlation_id=message.correlation_id, delivery_mode=1
        )
        try:
            await self.publisher.send("", str(message.reply_to), body, props, mandatory=False)
        except PublishError as exc:
            self._log.warning(
                "reply not delivered",
                **message_fields(message, "ack", None),
                reply_to=message.reply_to,
                reason=str(exc),
            )

    async def _ack(self, channel: Any, tag: int) -> None:
        acker = self._acker
        if acker is not None and acker.channel is channel and not acker.ack(tag):
            return  # coalesced into one basic.ack(multiple=True) per loop turn
        try:
            await channel.basic_ack(tag, wait=False)
        except _CHANNEL_GONE as exc:
            self._late_ack(exc, tag)

    def _late_ack(self, exc: BaseException, tag: int | None = None) -> None:
        # The broker requeued the message when the channel died: it will be delivered
        # again (at-least-once), so the late ack is dropped.
        self._log.warning("late ack dropped: channel closed", delivery_tag=tag, reason=str(exc))

    async def _nack(self, channel: Any, tag: int, *, requeue: bool) -> None:
        acker = self._acker
        try:
            await channel.basic_nack(tag, requeue=requeue, wait=False)
        except _CHANNEL_GONE:
            self._log.warning("late nack dropped: channel closed", delivery_tag=tag)
        if acker is not None and acker.channel is channel:
            acker.settled(tag)

    def _settled(
        self,
        outcome: str,
        seconds: float | None,
        *,
        delay_ms: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self.observer is not None:
            self.observer(self.route.logical, outcome, seconds, delay_ms=delay_ms, error=error)
        if self.tracer is not None:
            self.tracer.settled(outcome, error)
