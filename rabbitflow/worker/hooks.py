"""The consumer's hooks for observability: metrics implement `OutcomeObserver`, tracing
implements `DeliveryTracer`; the consumer knows neither."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from rabbitflow.worker.message import Message


class OutcomeObserver(Protocol):
    """Told how each delivery was settled; metrics implement it."""

    def __call__(
        self,
        queue: str,
        outcome: str,
        seconds: float | None,
        *,
        delay_ms: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """One delivery of ``queue`` (the logical queue) was settled.

        Args:
            queue: the queue the handler was registered for.
            outcome: ``ack``, ``retry``, ``dead_letter``, ``nack`` or ``requeue``.
            seconds: how long the handler ran; None when it did not run (a duplicate).
            delay_ms: for ``retry``, the delay tier the copy waits in.
            error: for a failure, the exception the handler raised.
        """


class DeliveryTracer(Protocol):
    """Runs each delivery inside a consumer span; `rabbitflow.tracing` implements it."""

    def active(self) -> bool:
        """Whether spans are recorded now (a tracer provider is set); while not, the
        worker skips `delivery` altogether."""

    def delivery(self, message: Message) -> AbstractContextManager[object]:
        """A context in which the delivery is processed (the handler's spans nest in it)."""

    def batch(self, messages: Sequence[Message]) -> AbstractContextManager[object]:
        """A context in which a batch handler's run and its settling happen."""

    def settled(self, outcome: str, error: BaseException | None) -> None:
        """Record the outcome on the current delivery's span."""


def message_fields(message: Message, outcome: str, seconds: float | None) -> dict[str, Any]:
    """The keys every log event about a message carries (the consumer binds ``queue``)."""
    return {
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "attempt": message.attempt,
        "outcome": outcome,
        "duration_ms": None if seconds is None else round(seconds * 1000, 3),
    }


__all__ = ["DeliveryTracer", "OutcomeObserver", "message_fields"]
