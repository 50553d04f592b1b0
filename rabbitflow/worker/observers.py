"""rabbitflow's own observers of settled deliveries: the outcome log, the metrics, the
tracing span, the circuit breaker. Each sees what the settle step did, never a guess."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from rabbitflow.errors import BodyDecodeError
from rabbitflow.worker.hooks import DeliveryTracer, OutcomeObserver, message_fields
from rabbitflow.worker.message import Message
from rabbitflow.worker.outcome import Outcome, Reject
from rabbitflow.worker.pipeline import CallNext, debug_enabled

if TYPE_CHECKING:
    from rabbitflow.worker.breaker import CircuitBreaker
    from rabbitflow.worker.pipeline import Delivery


class OutcomeLog:
    """One log event per delivery, with the stable keys of `message_fields`."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._successes = debug_enabled(log)

    def settled(self, d: Delivery, outcome: Outcome) -> None:
        kind = outcome.kind
        message = d.message
        if kind == "ack":
            if self._successes and d.ran:
                self._log.debug(
                    "message handled", **message_fields(message, "ack", outcome.seconds)
                )
            return
        fields = message_fields(message, kind, outcome.seconds)
        if kind == "retry":
            self._log.info(
                "handler failed; retrying", **fields, error=outcome.error, delay_ms=d.delay_ms
            )
        elif kind == "dead_letter":
            self._log.warning("handler failed; dead-lettered", **fields, error=outcome.error)
        elif kind == "nack":
            self._log.error(
                "handler failed; queue has no dead letters, nacking", **fields, error=outcome.error
            )
        elif kind == "dropped":
            self._log.warning(
                "handler failed; dropped (at-most-once: acked on arrival)",
                **fields,
                error=outcome.error,
            )
        elif d.reason is not None:
            self._log.error(
                "could not publish the retry/dead-letter copy; requeueing",
                **fields,
                error=outcome.error,
                reason=d.reason,
            )
        else:
            self._log.warning("handler cancelled; requeued", **fields)


class MetricsObserver:
    """Feeds an `OutcomeObserver` (`Metrics.outcome`)."""

    def __init__(self, queue: str, observe: OutcomeObserver) -> None:
        self.queue = queue
        self._observe = observe

    def settled(self, d: Delivery, outcome: Outcome) -> None:
        self._observe(
            self.queue,
            outcome.kind,
            outcome.seconds,
            delay_ms=d.delay_ms,
            error=outcome.exception,
        )


class TracingObserver:
    """Records the outcome on the delivery's consumer span (current while settling)."""

    def __init__(self, tracer: DeliveryTracer) -> None:
        self._tracer = tracer

    def settled(self, d: Delivery, outcome: Outcome) -> None:
        self._tracer.settled(outcome.kind, outcome.exception)


class BreakerMiddleware:
    """Counts a handler's successes and failures for its circuit breaker, as a middleware
    inside idempotency and outside the user's: it sees what the outermost user
    middleware decided, and it counts before the settle step, so an opening breaker
    cancels consumption before the failed delivery's ack lets the next one in. Poison
    input (`Reject`, a body that does not decode) says nothing about the downstream."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    async def __call__(self, message: Message, call_next: CallNext) -> Any:
        try:
            result = await call_next(message)
        except Exception as exc:
            if not isinstance(exc, Reject | BodyDecodeError):
                self._breaker.record_failure()
            raise
        self._breaker.record_success()
        return result


class Counts:
    """Deliveries settled by outcome (the consumer logs them when the worker stops)."""

    def __init__(self, counts: collections.Counter[str]) -> None:
        self._counts = counts

    def settled(self, d: Delivery, outcome: Outcome) -> None:
        self._counts[outcome.kind] += 1


__all__ = ["BreakerMiddleware", "Counts", "MetricsObserver", "OutcomeLog", "TracingObserver"]
