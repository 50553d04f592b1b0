"""One delivery's way through the worker (DESIGN.md §7): middlewares around the handler
call, the pure decision of `outcome.decide`, the settle step, then the observers.

::

    Delivery ─▶ [idempotency] ─▶ user middlewares ─▶ decode ─▶ [timeout] ─▶ handler
                                                                               │
      observers ◀── Settler (ack | copy+ack | nack | requeue) ◀── decide(exc) ◀┘

The consumer only does flow control (qos, in-flight bound, ack coalescing, cancel,
reconnect); it hands each delivery to `Pipeline.run`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from rabbitflow.compression import inflate
from rabbitflow.errors import HandlerTimeout
from rabbitflow.headers import CONSUMER_NAME, REPLAYED_AT, read_text
from rabbitflow.worker.handler import BatchFailure, HandlerSpec
from rabbitflow.worker.message import Message
from rabbitflow.worker.outcome import Action, Outcome, decide, describe

if TYPE_CHECKING:
    from rabbitflow.worker.hooks import DeliveryTracer
    from rabbitflow.worker.settle import Route, Settler

log = structlog.get_logger("rabbitflow.worker")

CallNext = Callable[[Message], Awaitable[Any]]
"""What a middleware calls to run the inner middlewares and the handler."""
Middleware = Callable[[Message, CallNext], Awaitable[Any]]
"""``async def mw(message, call_next)``, registered with ``@app.middleware``."""
SettledObserver = Callable[[Message, Outcome], Awaitable[None]]
"""``async def f(message, outcome)``, registered with ``@app.on_settled``."""


class Delivery:
    """One delivery's state on its way through the pipeline."""

    __slots__ = (
        "body",
        "channel",
        "delay_ms",
        "encoding",
        "error",
        "message",
        "ran",
        "raw",
        "reason",
        "started",
        "tag",
    )

    def __init__(self, raw: Any, message: Message, channel: Any, tag: int) -> None:
        self.raw = raw
        """The aiormq delivery (body and properties as received)."""
        self.message = message
        self.channel = channel
        """The channel it came on: it is settled there, or not at all."""
        self.tag = tag
        self.started = time.perf_counter()
        self.body: Any = None
        """The decoded body, once decoded."""
        props = getattr(getattr(raw, "header", None), "properties", None)
        self.encoding: str | None = getattr(props, "content_encoding", None)
        """The body's ``content_encoding`` (gzip, deflate), undone before decoding."""
        self.ran = False
        """True once the handler was called (not for a duplicate or a decode failure)."""
        self.error: BaseException | None = None
        """What the chain raised (a `CancelledError` for a shutdown), else None."""
        self.delay_ms: int | None = None
        self.reason: str | None = None
        """Why a retry or dead-letter copy could not be published (the delivery was
        requeued instead)."""


class DeliveryObserver(Protocol):
    """rabbitflow's own observers (logs, metrics, tracing, circuit breaker, the test
    harness): told synchronously, with the whole delivery, before the user's.

    One may also have ``started(delivery)``, called when the handler is about to run
    with ``delivery.body`` (the test harness shows running calls with it).
    """

    def settled(self, delivery: Delivery, outcome: Outcome) -> None:
        """The delivery's outcome was carried out."""


class Duplicate(Exception):
    """Raised by the idempotency middleware for a key processed before: the delivery is
    acked without running the handler."""


class Unsettleable(Exception):
    """Raised by one of rabbitflow's own steps that failed in a way no outcome covers (an
    idempotency store that cannot record a key): the pipeline re-raises ``error`` to the
    consumer, whose last resort nacks the delivery without requeue and logs it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_current: contextvars.ContextVar[Delivery] = contextvars.ContextVar("rabbitflow_delivery")
_batch: contextvars.ContextVar[list[Delivery]] = contextvars.ContextVar("rabbitflow_batch")


class Pipeline:
    """Runs one handler's deliveries: chain, decision, settle, observers."""

    def __init__(
        self,
        spec: HandlerSpec,
        route: Route,
        settler: Settler,
        *,
        executor: Executor,
        middlewares: Sequence[Middleware] = (),
        observers: Sequence[DeliveryObserver] = (),
        on_settled: Sequence[SettledObserver] = (),
        tracer: DeliveryTracer | None = None,
    ) -> None:
        self.spec = spec
        self.route = route
        self.settler = settler
        self.executor = executor
        self.tracer = tracer
        self.max_body = settler.publisher.max_message_size
        """The largest a compressed body may inflate to (``max_message_size``)."""
        self._raw_ok = spec.body_type is bytes
        self.observers = tuple(observers)
        self.on_settled = tuple(on_settled)
        self._starts: tuple[Any, ...] = tuple(o for o in self.observers if hasattr(o, "started"))
        self._filters = spec.options.filters
        self._ack = settler.ack_now
        self._dead_letters = route.dead_letter is not None
        self._log = log.bind(queue=route.queue, handler=spec.name)
        self.chain: CallNext | None = None
        """The middlewares wrapped around the handler, outermost first; None without any
        (the handler is then called directly: no cost for what is not used)."""
        if middlewares:
            core = self._core if spec.options.batch is None else self._batch_core
            self.chain = _compose(tuple(middlewares), core)
        self.at_most_once = spec.options.delivery == "at_most_once"
        """Acked on arrival, failures dropped (DESIGN.md §8)."""
        self._body: Callable[[Delivery], Awaitable[None]] = (
            self._run_at_most_once
            if self.at_most_once
            else self._run_stream
            if route.stream is not None
            else self._run
        )
        self.run: Callable[[Delivery], Awaitable[None]] = (
            self._body if tracer is None else self._maybe_traced
        )
        """Process one delivery to its end (settled and observed)."""

    def _maybe_traced(self, delivery: Delivery) -> Awaitable[None]:
        # A plain function: while no tracer provider is set (tracing installed but not
        # configured) a delivery costs no span and no wrapping coroutine.
        assert self.tracer is not None
        if self.tracer.active():
            return self._traced(delivery)
        return self._body(delivery)

    async def _traced(self, delivery: Delivery) -> None:
        assert self.tracer is not None
        with self.tracer.delivery(delivery.message):
            await self._body(delivery)

    async def _run_at_most_once(self, d: Delivery) -> None:
        """At-most-once: acked already (the consumer acks on arrival, before the run);
        a failure is logged and counted as ``dropped`` (never retried, never
        dead-lettered)."""
        message = d.message
        try:
            if self.chain is None:
                result = await self._handle(d)
            else:
                _current.set(d)
                result = await self.chain(message)
        except asyncio.CancelledError as exc:
            # Shutdown timeout or a lost channel: acked already, so the run is lost.
            d.error = exc
            outcome = await asyncio.shield(self.settler.drop(d, exc))
            self._notify_now(d, outcome)
            if self.on_settled:
                await asyncio.shield(self._notify_user(message, outcome))
            raise
        except Duplicate:
            outcome = Outcome("ack", message.attempt)
        except Unsettleable as exc:
            d.error = exc.error
            outcome = await self.settler.drop(d, exc.error)
        except Exception as exc:
            d.error = exc
            outcome = await self.settler.drop(d, exc)
        else:
            outcome = await self.settler.answered(d, result)
        if self.observers:
            self._notify_now(d, outcome)
        if self.on_settled:
            await self._notify_user(message, outcome)

    async def _run(self, d: Delivery) -> None:
        message = d.message
        try:
            if self.chain is None:
                result = await self._handle(d)
            else:
                _current.set(d)
                result = await self.chain(message)
        except asyncio.CancelledError as exc:
            # Shutdown timeout or a lost channel: the message goes back untouched.
            d.error = exc
            outcome = await asyncio.shield(self.settler.requeue(d))
            self._notify_now(d, outcome)
            if self.on_settled:
                await asyncio.shield(self._notify_user(message, outcome))
            raise
        except Duplicate:
            outcome = await self.settler.ack(d, None, reply=False)
        except Unsettleable as exc:
            raise exc.error from None
        except Exception as exc:
            d.error = exc
            decision = decide(
                exc,
                attempt=message.attempt,
                retry=self.route.retry,
                dead_letters=self._dead_letters,
                filters=self._filters,
            )
            outcome = await self.settler.fail(d, decision, exc)
        else:
            if message.reply_to:
                outcome = await self.settler.ack(d, result, reply=True)
            else:
                # The hot path, inlined: the settle step's ack without its frame.
                seconds = time.perf_counter() - d.started
                await self._ack(d.channel, d.tag)
                outcome = Outcome("ack", message.attempt, None, None, None, seconds)
        if self.observers:
            self._notify_now(d, outcome)
        if self.on_settled:
            await self._notify_user(message, outcome)

    # -- stream handlers (DESIGN.md §9) ---------------------------------------------

    async def _run_stream(self, d: Delivery) -> None:
        """A stream event: a stream cannot requeue or dead-letter, so a failure is
        retried here after the handler's ``retry=`` delay, then copied to the consumer's
        DLQ; either way its offset then settles. Cancelled (shutdown), it does not
        settle: the stored position stays below it and a restart runs it again."""
        message = d.message
        stream = self.route.stream
        assert stream is not None
        if not _for_consumer(message, stream.consumer_name):
            self.settler.stream_ack(d)  # a dlq replay addressed to another consumer
            return
        while True:
            try:
                if self.chain is None:
                    await self._handle(d)
                else:
                    _current.set(d)
                    await self.chain(message)
            except asyncio.CancelledError as exc:
                d.error = exc
                outcome = Outcome("requeue", message.attempt, seconds=self._seconds(d))
                self._notify_now(d, outcome)
                if self.on_settled:
                    await asyncio.shield(self._notify_user(message, outcome))
                raise
            except Exception as exc:
                d.error = exc
                decision = decide(
                    exc,
                    attempt=message.attempt,
                    retry=stream.retry,
                    dead_letters=True,
                    filters=self._filters,
                )
                if decision.action is not Action.RETRY:
                    outcome = await self.settler.stream_dead_letter(d, exc)
                    break
                assert decision.delay_ms is not None
                d.delay_ms = decision.delay_ms
                retry = Outcome(
                    "retry",
                    message.attempt,
                    delay=decision.delay_ms / 1000,
                    error=describe(exc),
                    seconds=self._seconds(d),
                    exception=exc,
                )
                self._notify_now(d, retry)
                if self.on_settled:
                    await self._notify_user(message, retry)
                await asyncio.sleep(decision.delay_ms / 1000)
                message.attempt += 1
                d.started, d.ran, d.error = time.perf_counter(), False, None
            else:
                outcome = self.settler.stream_ack(d)
                break
        if self.observers:
            self._notify_now(d, outcome)
        if self.on_settled:
            await self._notify_user(message, outcome)

    @staticmethod
    def _seconds(d: Delivery) -> float:
        return time.perf_counter() - d.started

    # -- batch handlers (DESIGN.md §8) ----------------------------------------------

    async def run_batch(self, batch: Sequence[Delivery]) -> None:
        """Decode each delivery (one that fails is dead-lettered alone), run the handler
        once with the lists (middlewares see the first message), settle each; with
        tracing, all of it inside one consumer span for the batch."""
        if self.tracer is None:
            await self._run_batch(batch)
            return
        with self.tracer.batch([d.message for d in batch]):
            await self._run_batch(batch)

    async def _run_batch(self, batch: Sequence[Delivery]) -> None:
        good: list[Delivery] = []
        for d in batch:
            try:
                data = inflate(d.message.body, d.encoding, limit=self.max_body, raw_ok=self._raw_ok)
                d.body = (
                    self.spec.decoder(data, d.message.content_type) if self.spec.decoder else None
                )
            except Exception as exc:
                await self._fail(d, exc)
                continue
            good.append(d)
        if not good:
            return
        try:
            if self.chain is None:
                await self._handle_batch(good)
            else:
                _batch.set(good)
                await self.chain(good[0].message)
        except asyncio.CancelledError as exc:
            for d in good:
                d.error = exc
                outcome = await asyncio.shield(self.settler.requeue(d))
                self._notify_now(d, outcome)
                if self.on_settled:
                    await asyncio.shield(self._notify_user(d.message, outcome))
            raise
        except BatchFailure as failure:
            for i, d in enumerate(good):
                error = failure.failures.get(i)
                if error is None:
                    await self._ok(d)
                else:
                    await self._fail(d, error if isinstance(error, Exception) else failure)
        except Unsettleable as exc:
            raise exc.error from None
        except Exception as exc:
            for d in good:
                await self._fail(d, exc)
        else:
            for d in good:
                await self._ok(d)

    async def _ok(self, d: Delivery) -> None:
        outcome = await self.settler.ack(d, None, reply=False)
        self._notify_now(d, outcome)
        if self.on_settled:
            await self._notify_user(d.message, outcome)

    async def _fail(self, d: Delivery, exc: Exception) -> None:
        d.error = exc
        decision = decide(
            exc,
            attempt=d.message.attempt,
            retry=self.route.retry,
            dead_letters=self._dead_letters,
            filters=self._filters,
        )
        outcome = await self.settler.fail(d, decision, exc)
        self._notify_now(d, outcome)
        if self.on_settled:
            await self._notify_user(d.message, outcome)

    def _batch_core(self, message: Message) -> Awaitable[Any]:
        return self._handle_batch(_batch.get())

    async def _handle_batch(self, good: list[Delivery]) -> Any:
        spec = self.spec
        bodies = [d.body for d in good]
        messages = [d.message for d in good]
        for d in good:
            d.ran = True
            for observer in self._starts:
                observer.started(d)
        call: Any = spec.call
        if spec.is_async:
            if spec.timeout is None:
                return await call(bodies, messages)
            try:
                async with asyncio.timeout(spec.timeout):
                    return await call(bodies, messages)
            except TimeoutError:
                raise HandlerTimeout(f"batch exceeded its {spec.timeout:g}s timeout") from None
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, context.run, call, bodies, messages
        )
        if spec.timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, spec.timeout)
        except TimeoutError:
            raise HandlerTimeout(
                f"batch exceeded its {spec.timeout:g}s timeout (sync handler left running)"
            ) from None

    def _notify_now(self, d: Delivery, outcome: Outcome) -> None:
        for observer in self.observers:
            try:
                observer.settled(d, outcome)
            except Exception as exc:  # an observer must never change an outcome
                self._log.error("settled observer failed", error=f"{type(exc).__name__}: {exc}")

    async def _notify_user(self, message: Message, outcome: Outcome) -> None:
        for observer in self.on_settled:
            try:
                await observer(message, outcome)
            except Exception as exc:
                self._log.error(
                    "on_settled observer failed; ignored",
                    observer=getattr(observer, "__qualname__", repr(observer)),
                    error=f"{type(exc).__name__}: {exc}",
                )

    # -- the innermost step: decode, then the handler (with its timeout) ------------

    def _core(self, message: Message) -> Awaitable[Any]:
        # A plain function returning the coroutine: no frame of its own per delivery.
        return self._handle(_current.get())

    async def _handle(self, d: Delivery) -> Any:
        spec = self.spec
        message = d.message
        data = inflate(message.body, d.encoding, limit=self.max_body, raw_ok=self._raw_ok)
        body = spec.decoder(data, message.content_type) if spec.decoder else None
        d.body = body
        d.ran = True
        for observer in self._starts:
            observer.started(d)
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


def _for_consumer(message: Message, consumer_name: str) -> bool:
    """False for an event a ``dlq replay`` appended to the stream for another consumer
    (the one whose handler failed on it): every other consumer has handled it already."""
    headers = message.headers
    if not headers or REPLAYED_AT not in headers:
        return True
    target = read_text(headers, CONSUMER_NAME)
    return target is None or target == consumer_name


def _compose(middlewares: tuple[Middleware, ...], core: CallNext) -> CallNext:
    """``middlewares[0]`` outermost; each one's ``call_next`` is the rest of the chain."""
    chain = core
    for middleware in reversed(middlewares):
        chain = _bind(middleware, chain)
    return chain


def _bind(middleware: Middleware, call_next: CallNext) -> CallNext:
    # Returns the middleware's coroutine rather than awaiting it in one of its own: a
    # layer costs one call, not one more coroutine.
    def step(message: Message) -> Awaitable[Any]:
        return middleware(message, call_next)

    step.__qualname__ = getattr(middleware, "__qualname__", "middleware")
    return step


def debug_enabled(logger: Any) -> bool:
    """Whether a bound structlog logger would emit debug events (successes are logged at
    debug level; building their fields is skipped when filtered)."""
    enabled = getattr(logger, "is_enabled_for", None)
    return enabled is None or bool(enabled(logging.DEBUG))


__all__ = [
    "CallNext",
    "Delivery",
    "DeliveryObserver",
    "Duplicate",
    "Middleware",
    "Pipeline",
    "SettledObserver",
    "Unsettleable",
]
