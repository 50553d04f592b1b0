"""Carrying out an outcome: the one place a delivery is acked, nacked, requeued or
copied to its delay queue or dead-letter exchange (DESIGN.md §2, §7).

The order is the at-least-once guarantee: a retry or dead-letter copy is confirmed by
the broker *before* the original is acked, so a crash in between can duplicate a
message but never lose it. What the settler did is returned as an `Outcome`, which may
differ from the decision: a retry whose delay queue is gone is dead-lettered instead,
and a copy the broker did not confirm is requeued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pamqp.commands import Basic

from rabbitflow.codec import encode
from rabbitflow.errors import PublishError, Unroutable
from rabbitflow.headers import CONSUMER_NAME, ERROR, ERROR_TYPE, STREAM_OFFSET
from rabbitflow.topology.schema import RetryPolicy, retry_queue_name
from rabbitflow.worker.hooks import message_fields
from rabbitflow.worker.message import Message
from rabbitflow.worker.outcome import Action, Decision, Outcome, describe, failure_headers

if TYPE_CHECKING:
    from rabbitflow.amqp.publish import Publisher
    from rabbitflow.worker.pipeline import Delivery
    from rabbitflow.worker.stream import StreamRoute

COPY_FAILURE_PAUSE = 1.0
"""Seconds a delivery waits before it is requeued because its retry or dead-letter copy
could not be confirmed: it keeps its prefetch slot, so a broken broker slows the worker
down instead of spinning the message."""

Settle = Callable[[Any, int], Awaitable[None]]
"""``ack(channel, tag)``: the consumer's (coalescing) ack."""
Nack = Callable[..., Awaitable[None]]
"""``nack(channel, tag, requeue=...)``: the consumer's nack."""


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
    definition: str = "unknown"
    """The fingerprint of the queue's declared definition, put in the consumer tag."""
    stream: StreamRoute | None = None
    """On a stream queue: the position, in-worker retries and the consumer's DLQ."""


class Settler:
    """Carries out outcomes for the deliveries of one consumer."""

    def __init__(
        self,
        route: Route,
        publisher: Publisher,
        *,
        ack: Settle,
        nack: Nack,
        log: Any,
        declare_queue: Callable[[str], Awaitable[None]] | None = None,
        settle_offset: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.route = route
        self.publisher = publisher
        self.ack_now = ack
        """The consumer's (coalescing) ack, for the pipeline's success path."""
        self._ack = ack
        self._nack = nack
        self._log = log
        self._declare_queue = declare_queue
        """Declares a stream consumer's DLQ (on its first dead letter)."""
        self._settle_offset = settle_offset
        """Tells the stream cursor an event settled (its position may move)."""
        self._declared: set[str] = set()

    async def ack(self, d: Delivery, result: Any, *, reply: bool) -> Outcome:
        """The handler succeeded (or the message was a duplicate): reply, then ack."""
        seconds = time.perf_counter() - d.started if d.ran else None
        if reply:
            await self._reply(d.message, result)
        await self._ack(d.channel, d.tag)
        return Outcome("ack", d.message.attempt, seconds=seconds)

    # -- at-most-once (DESIGN.md §8): acked on arrival (by the consumer) ------------

    async def answered(self, d: Delivery, result: Any) -> Outcome:
        """An at-most-once success: the reply, if asked for (the ack was sent before)."""
        if d.message.reply_to:
            await self._reply(d.message, result)
        seconds = time.perf_counter() - d.started if d.ran else None
        return Outcome("ack", d.message.attempt, seconds=seconds)

    async def drop(self, d: Delivery, error: BaseException) -> Outcome:
        """An at-most-once failure (or a run cancelled at shutdown): nothing to settle,
        the message was acked on arrival. An error reply tells a caller at once."""
        seconds = time.perf_counter() - d.started
        if d.message.reply_to and isinstance(error, Exception):
            await self._reply_error(d.message, error)
        return Outcome(
            "dropped", d.message.attempt, error=describe(error), seconds=seconds, exception=error
        )

    async def requeue(self, d: Delivery) -> Outcome:
        """Give the message back untouched (shutdown timeout, lost channel)."""
        seconds = time.perf_counter() - d.started
        if not d.channel.is_closed:
            await self._nack(d.channel, d.tag, requeue=True)
        return Outcome("requeue", d.message.attempt, seconds=seconds)

    async def fail(self, d: Delivery, decision: Decision, error: Exception) -> Outcome:
        """Carry out the decision for a failure; returns what was done."""
        seconds = time.perf_counter() - d.started
        attempt = d.message.attempt
        text = describe(error)
        if d.message.reply_to:
            # The caller learns of the failure now instead of waiting out its timeout.
            await self._reply_error(d.message, error)
        if decision.action is Action.NACK:
            await self._nack(d.channel, d.tag, requeue=False)
            return Outcome("nack", attempt, error=text, seconds=seconds, exception=error)
        try:
            destination = await self._publish_copy(d, decision, error)
        except PublishError as exc:
            if decision.action is Action.RETRY and isinstance(exc, Unroutable):
                # The delay queue is gone: a dead letter is better than a lost message.
                decision = Decision(Action.DEAD_LETTER)
                try:
                    destination = await self._publish_copy(d, decision, error)
                except PublishError as again:
                    return await self._copy_failed(d, again, text, seconds, error)
            else:
                return await self._copy_failed(d, exc, text, seconds, error)
        await self._ack(d.channel, d.tag)
        if decision.action is Action.RETRY:
            assert decision.delay_ms is not None
            d.delay_ms = decision.delay_ms
            return Outcome(
                "retry",
                attempt,
                delay=decision.delay_ms / 1000,
                destination=destination,
                error=text,
                seconds=seconds,
                exception=error,
            )
        return Outcome(
            "dead_letter",
            attempt,
            destination=destination,
            error=text,
            seconds=seconds,
            exception=error,
        )

    # -- streams (DESIGN.md §9): nothing is requeued or dead-lettered by the broker ----

    def stream_ack(self, d: Delivery) -> Outcome:
        """A stream event was handled: its offset settles (stored and acked when the
        position moves past it)."""
        seconds = time.perf_counter() - d.started if d.ran else None
        assert self._settle_offset is not None
        self._settle_offset(d)
        return Outcome("ack", d.message.attempt, seconds=seconds)

    async def stream_dead_letter(self, d: Delivery, error: Exception) -> Outcome:
        """A stream event failed for good: a copy with the error headers goes to the
        consumer's DLQ, confirmed, before its offset settles. A copy that cannot be
        published is tried again every `COPY_FAILURE_PAUSE` seconds (the position waits:
        nothing is skipped) until it is, or the channel is gone (then the event comes
        again after the restart)."""
        assert self.route.stream is not None
        assert self._settle_offset is not None
        seconds = time.perf_counter() - d.started
        dlq = self.route.stream.dead_letter_queue
        copy = self._stream_copy(d, error)
        while True:
            try:
                if dlq not in self._declared and self._declare_queue is not None:
                    await self._declare_queue(dlq)
                    self._declared.add(dlq)
                await self.publisher.send("", dlq, d.raw.body, copy, mandatory=True)
                break
            except Exception as exc:
                d.reason = describe(exc)
                self._declared.discard(dlq)  # deleted meanwhile? declared again next time
                self._log.warning(
                    "stream dead letter not confirmed; trying again",
                    dead_letter_queue=dlq,
                    offset=d.message.stream_offset,
                    reason=d.reason,
                )
                if d.channel.is_closed:
                    return Outcome(
                        "requeue", d.message.attempt, error=describe(error), exception=error
                    )
                await asyncio.sleep(COPY_FAILURE_PAUSE)
        self._settle_offset(d)
        return Outcome(
            "dead_letter",
            d.message.attempt,
            destination=dlq,
            error=describe(error),
            seconds=seconds,
            exception=error,
        )

    def _stream_copy(self, d: Delivery, error: Exception) -> Basic.Properties:
        assert self.route.stream is not None
        message = d.message
        received = dict(d.raw.header.properties.headers or {})
        received.pop("x-stream-offset", None)  # the broker's; a new one is set on replay
        headers = failure_headers(
            received,
            queue=self.route.logical,
            attempt=message.attempt,
            error=error,
            exchange=message.exchange,
            routing_key=message.routing_key,
            with_traceback=True,
        )
        headers[STREAM_OFFSET] = message.stream_offset
        headers[CONSUMER_NAME] = self.route.stream.consumer_name
        return _properties(d.raw.header.properties, headers)

    async def _copy_failed(
        self, d: Delivery, exc: Exception, text: str, seconds: float, error: Exception
    ) -> Outcome:
        d.reason = str(exc)
        await asyncio.sleep(COPY_FAILURE_PAUSE)
        await self._nack(d.channel, d.tag, requeue=True)
        return Outcome("requeue", d.message.attempt, error=text, seconds=seconds, exception=error)

    async def _publish_copy(self, d: Delivery, decision: Decision, error: BaseException) -> str:
        raw, message = d.raw, d.message
        props = raw.header.properties
        retrying = decision.action is Action.RETRY
        headers = failure_headers(
            props.headers,
            queue=self.route.logical,
            attempt=message.attempt + 1 if retrying else message.attempt,
            error=error,
            # What the message says, not what its headers claim: a first delivery's
            # forged original-* headers are overwritten here.
            exchange=message.exchange,
            routing_key=message.routing_key,
            with_traceback=not retrying,
        )
        copy = _properties(props, headers)
        if retrying:
            assert decision.delay_ms is not None
            exchange, key = "", retry_queue_name(self.route.queue, decision.delay_ms)
            destination = key
        else:
            assert self.route.dead_letter is not None
            exchange, key = self.route.dead_letter
            destination = exchange
        await self.publisher.send(exchange, key, raw.body, copy, mandatory=True)
        return destination

    async def _reply_error(self, message: Message, error: BaseException) -> None:
        """An error reply (DESIGN.md §13): empty body, the error in two headers."""
        props = Basic.Properties(
            correlation_id=message.correlation_id,
            delivery_mode=1,
            headers={ERROR: describe(error), ERROR_TYPE: type(error).__name__},
        )
        await self._send_reply(message, b"", props)

    async def _reply(self, message: Message, result: Any) -> None:
        try:
            body, content_type = encode(result)
        except Exception as exc:  # the handler returned something JSON cannot carry
            self._log.error(
                "reply could not be encoded; sending an error reply",
                **message_fields(message, "ack", None),
                error=describe(exc),
            )
            await self._reply_error(message, exc)
            return
        props = Basic.Properties(
            content_type=content_type, correlation_id=message.correlation_id, delivery_mode=1
        )
        await self._send_reply(message, body, props)

    async def _send_reply(self, message: Message, body: bytes, props: Basic.Properties) -> None:
        try:
            await self.publisher.send("", str(message.reply_to), body, props, mandatory=False)
        except Exception as exc:  # a reply that fails must never keep a delivery unsettled
            self._log.warning(
                "reply not delivered",
                **message_fields(message, "ack", None),
                reply_to=message.reply_to,
                reason=describe(exc),
            )


def _properties(props: Any, headers: dict[str, Any]) -> Basic.Properties:
    """A copy's properties: the original's with new headers."""
    return Basic.Properties(
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


__all__ = ["COPY_FAILURE_PAUSE", "Route", "Settler"]
