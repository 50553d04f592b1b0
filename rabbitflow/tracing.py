"""OpenTelemetry context across the broker, with the optional extra ``rabbitflow[otel]``.

A publish opens a PRODUCER span and writes its context into the message headers as W3C
``traceparent`` (through the globally configured propagator); each delivery runs inside a
CONSUMER span whose parent is that context, and which links to it. Retry and dead-letter
copies keep the original headers, so every attempt of a message lands in the trace of
the publish that created it. A batch handler's run is one CONSUMER span of its own, linked
to the publish of each of its messages (``messaging.batch.message_count``), with the
outcomes of its messages counted on it.

Without opentelemetry installed, `load` returns None and nothing of OpenTelemetry is
imported: this module imports it only inside `load`.
"""

from __future__ import annotations

import collections
import contextvars
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from rabbitflow.worker.message import Message

_batch_outcomes: contextvars.ContextVar[collections.Counter[str]] = contextvars.ContextVar(
    "rabbitflow_batch_outcomes"
)
"""The outcomes of the batch whose span is current (`Tracing.settled` counts into it)."""

TRACER_NAME = "rabbitflow"
RECHECK_SECONDS = 1.0
SYSTEM = "rabbitmq"


def load(enabled: bool = True) -> Tracing | None:
    """A `Tracing` when tracing is enabled and opentelemetry-api is importable, else None."""
    if not enabled:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return Tracing(trace.get_tracer(TRACER_NAME))


class _Getter:
    """Reads a propagation field from AMQP headers (values may arrive as bytes).

    Structurally an ``opentelemetry.propagators.textmap.Getter``; not a subclass, so that
    this module imports nothing of OpenTelemetry until `load` runs.
    """

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


class Tracing:
    """Producer and consumer spans; implements `PublishTracer` and `DeliveryTracer`."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import propagate, trace

        self._tracer = tracer
        self._trace = trace
        self._propagate = propagate
        self._getter = _Getter()
        self._on = False
        self._next_check = 0.0

    def active(self) -> bool:
        """Whether a tracer provider (the SDK) is set. Until then the API's spans are
        no-ops that carry no context, so rabbitflow skips them (about 20 µs a message).

        A provider can be set once per process, so a yes is kept; a no is checked again
        at most once a second (the check reads the environment).
        """
        if self._on:
            return True
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + RECHECK_SECONDS
            provider = self._trace.get_tracer_provider()
            self._on = not isinstance(provider, self._trace.ProxyTracerProvider)
        return self._on

    def publishing(
        self, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> AbstractContextManager[object]:
        """A PRODUCER span for one publish; injects its context into ``headers``."""
        if not self.active():
            return nullcontext()
        return self._publishing(exchange, routing_key, headers)

    def delivery(self, message: Message) -> AbstractContextManager[object]:
        """A CONSUMER span around one delivery, parented to and linked with the
        context its headers carry."""
        if not self.active():
            return nullcontext()
        return self._delivery(message)

    def batch(self, messages: Sequence[Message]) -> AbstractContextManager[object]:
        """A CONSUMER span around one run of a batch handler, linked to the context each
        message's headers carry; the messages' outcomes are counted on it."""
        if not self.active() or not messages:
            return nullcontext()
        return self._batch(messages)

    @contextmanager
    def _publishing(
        self, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> Iterator[object]:
        """A PRODUCER span for one publish; injects its context into ``headers``."""
        attributes = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": exchange or "amq.default",
            "messaging.rabbitmq.destination.routing_key": routing_key,
        }
        with self._tracer.start_as_current_span(
            f"send {exchange or 'amq.default'}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes=attributes,
        ) as span:
            self._propagate.inject(headers)
            yield span

    @contextmanager
    def _delivery(self, message: Message) -> Iterator[object]:
        parent = self._propagate.extract(message.headers, getter=self._getter)  # type: ignore[arg-type]  # structural Getter
        remote = self._trace.get_current_span(parent).get_span_context()
        links = [self._trace.Link(remote)] if remote.is_valid else []
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": message.queue,
            "messaging.rabbitmq.destination.routing_key": message.routing_key,
            "rabbitflow.attempt": message.attempt,
        }
        if message.message_id:
            attributes["messaging.message.id"] = message.message_id
        if message.correlation_id:
            attributes["messaging.message.conversation_id"] = message.correlation_id
        with self._tracer.start_as_current_span(
            f"process {message.queue}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
        ) as span:
            yield span

    @contextmanager
    def _batch(self, messages: Sequence[Message]) -> Iterator[object]:
        links = []
        for message in messages:
            context = self._propagate.extract(message.headers, getter=self._getter)  # type: ignore[arg-type]  # structural Getter
            remote = self._trace.get_current_span(context).get_span_context()
            if remote.is_valid:
                links.append(self._trace.Link(remote))
        queue = messages[0].queue
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.batch.message_count": len(messages),
        }
        outcomes: collections.Counter[str] = collections.Counter()
        token = _batch_outcomes.set(outcomes)
        try:
            # No parent: the messages come from as many traces as there are publishes
            # (OpenTelemetry's messaging conventions link a batch to each instead).
            with self._tracer.start_as_current_span(
                f"process {queue}",
                kind=self._trace.SpanKind.CONSUMER,
                links=links,
                attributes=attributes,
            ) as span:
                try:
                    yield span
                finally:
                    if outcomes:
                        kinds = sorted(outcomes)
                        span.set_attribute(
                            "rabbitflow.outcome", kinds[0] if len(kinds) == 1 else "mixed"
                        )
                        for kind in kinds:
                            span.set_attribute(f"rabbitflow.outcomes.{kind}", outcomes[kind])
        finally:
            _batch_outcomes.reset(token)

    def settled(self, outcome: str, error: BaseException | None) -> None:
        """Record the outcome (and a failure) on the current delivery's span; in a
        batch's span, count it (and record each failure)."""
        if not self.active():
            return
        span = self._trace.get_current_span()
        if not span.is_recording():
            return
        counts = _batch_outcomes.get(None)
        if counts is not None:
            counts[outcome] += 1
        else:
            span.set_attribute("rabbitflow.outcome", outcome)
        if error is not None:
            span.record_exception(error)
            span.set_status(
                self._trace.Status(self._trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
            )


__all__ = ["Tracing", "load"]
