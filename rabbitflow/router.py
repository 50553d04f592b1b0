"""`Router`: handlers declared in a module of their own, added to an `App` with
`App.include_router` (DESIGN.md §7)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from rabbitflow.errors import HandlerError
from rabbitflow.worker.handler import (
    Batch,
    DeliveryMode,
    ExceptionTypes,
    HandlerOptions,
    HandlerSpec,
    StreamOffset,
    inspect_handler,
    stream_options,
)

if TYPE_CHECKING:
    from rabbitflow.streams.offsets import OffsetStore
    from rabbitflow.topology.schema import RetryPolicy
    from rabbitflow.worker.breaker import CircuitBreaker
    from rabbitflow.worker.idempotency import IdempotencyStore
    from rabbitflow.worker.message import Message

F = TypeVar("F", bound=Callable[..., Any])


class Router:
    """A set of handlers by queue, with the same ``handler(...)`` decorator as `App`.

    A router knows no topology: its queues are checked when an app includes it (or, when
    the app's topology comes later, at `App.start`).
    """

    def __init__(self) -> None:
        self.handlers: dict[str, HandlerSpec] = {}

    def handler(
        self,
        queue: str,
        *,
        prefetch: int | None = None,
        timeout: float | str | None = None,
        idempotency: IdempotencyStore | None = None,
        idempotency_key: Callable[[Message], str | None] | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        retry_on: ExceptionTypes = (Exception,),
        dead_letter_on: ExceptionTypes = (),
        delivery: DeliveryMode = "at_least_once",
        batch: Batch | None = None,
        offset: StreamOffset | None = None,
        consumer_name: str | None = None,
        offsets: OffsetStore | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``queue``; see `App.handler`.

        Raises:
            HandlerError: the queue has a handler in this router already, or the
                function's signature or options cannot be served.
        """

        def register(func: F) -> F:
            options = HandlerOptions(
                idempotency=idempotency,
                idempotency_key=idempotency_key,
                circuit_breaker=circuit_breaker,
                retry_on=retry_on,
                dead_letter_on=dead_letter_on,
                delivery=delivery,
                batch=batch,
                stream=stream_options(
                    func,
                    offset=offset,
                    consumer_name=consumer_name,
                    offsets=offsets,
                    retry=retry,
                ),
            )
            spec = inspect_handler(func, queue, prefetch=prefetch, timeout=timeout, options=options)
            self.add(spec)
            return func

        return register

    def add(self, spec: HandlerSpec) -> None:
        """Add a handler worked out by `inspect_handler`.

        Raises:
            HandlerError: its queue has a handler here already.
        """
        taken = self.handlers.get(spec.queue)
        if taken is not None:
            raise HandlerError(
                f"queue {spec.queue!r} has a handler already: {taken.name} (cannot add {spec.name})"
            )
        self.handlers[spec.queue] = spec


__all__ = ["Router"]
