"""Prometheus metrics of one App (DESIGN.md §5), in a registry of its own.

The consumer and the publisher report through their hooks (`OutcomeObserver`,
`PublishObserver`); label children are bound once per queue and outcome, so a delivery
costs a few increments and no label lookup. With ``--processes N`` the children write
their values to prometheus-client's multiprocess files and the supervisor serves the
sum (see `rabbitflow.exposition`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rabbitflow.units import format_duration
from rabbitflow.worker.breaker import BreakerState, CircuitBreaker

OUTCOMES = ("ack", "retry", "dead_letter", "nack", "requeue", "dropped")
"""Values of the ``outcome`` label of ``rabbitflow_messages_total``; ``requeue`` counts
deliveries given back untouched (shutdown, or a copy the broker would not confirm);
``dropped`` failed runs of an at-most-once handler (acked on arrival)."""
PUBLISH_OUTCOMES = ("confirmed", "nacked", "returned", "failed")
"""Values of the ``outcome`` label of ``rabbitflow_published_total``; ``failed`` = no
answer from the broker (timeout, connection lost): the message may or may not be there."""
DEFAULT_EXCHANGE = "amq.default"
"""The ``exchange`` label of publishes to the default exchange (``""``)."""
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
"""``rabbitflow_circuit_breaker_state``: 0 closed, 1 half-open, 2 open."""

HANDLER_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    float("inf"),
)
CONFIRM_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    float("inf"),
)


class _QueueChildren:
    """The label children of one queue, bound once."""

    __slots__ = ("dead_letters", "outcomes", "queue", "retries", "seconds")

    def __init__(self, metrics: Metrics, queue: str, delays: Iterable[int]) -> None:
        self.queue = queue
        self.outcomes = {o: metrics.messages.labels(queue, o) for o in OUTCOMES}
        self.seconds = metrics.handler_seconds.labels(queue)
        self.retries = {d: metrics.retries.labels(queue, format_duration(d)) for d in delays}
        self.dead_letters: dict[type[BaseException], Any] = {}


class Metrics:
    """Every rabbitflow metric, registered in ``registry`` (a new one by default).

    Args:
        registry: where to register; pass one to expose rabbitflow's metrics with yours.
        multiprocess: values go to ``PROMETHEUS_MULTIPROC_DIR`` files (a supervised
            child); gauges then say how the processes' values combine.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        r = self.registry
        self.messages = Counter(
            "rabbitflow_messages",
            "Deliveries settled, by queue and outcome.",
            ["queue", "outcome"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "rabbitflow_handler_seconds",
            "How long each handler run took.",
            ["queue"],
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "rabbitflow_in_flight",
            "Deliveries in the worker now (at most the prefetch).",
            ["queue"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.published = Counter(
            "rabbitflow_published",
            "Publishes by exchange and outcome (every publish "
            "rabbitflow makes: the app's, replies, retry and dead-letter copies).",
            ["exchange", "outcome"],
            registry=r,
        )
        self.confirm_seconds = Histogram(
            "rabbitflow_publish_confirm_seconds",
            "Time from publish to the broker's answer.",
            ["exchange"],
            buckets=CONFIRM_BUCKETS,
            registry=r,
        )
        self.queue_messages = Gauge(
            "rabbitflow_queue_messages",
            "Ready messages in a consumed queue (polled).",
            ["queue"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.dead_letter_messages = Gauge(
            "rabbitflow_dead_letter_messages",
            "Messages in a queue's dead-letter queue (polled).",
            ["queue"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.retries = Counter(
            "rabbitflow_retries",
            "Retry copies published, by queue and delay tier.",
            ["queue", "delay"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rabbitflow_dead_letters",
            "Messages dead-lettered, by queue and error type.",
            ["queue", "error"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "rabbitflow_circuit_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open (the most open of all processes).",
            ["queue"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.connection_blocked = Gauge(
            "rabbitflow_connection_blocked",
            "1 while the broker blocks a connection (memory or disk alarm).",
            ["connection"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self._queues: dict[str, _QueueChildren] = {}
        self._exchanges: dict[str, tuple[dict[str, Any], Any]] = {}
        self._in_flight_sources: list[tuple[Any, Callable[[], int]]] = []
        self._breakers: set[int] = set()

    # -- wiring ----------------------------------------------------------------------

    def add_queue(self, queue: str, delays: Iterable[int] = ()) -> None:
        """Bind the children of a handler's queue and its retry delay tiers (in ms)."""
        if queue not in self._queues:
            self._queues[queue] = _QueueChildren(self, queue, delays)

    def watch_in_flight(self, queue: str, read: Callable[[], int]) -> None:
        """Report ``read()`` as the in-flight count of ``queue``: at scrape time in one
        process, at each `sample` with several."""
        child = self.in_flight.labels(queue)
        if self.multiprocess:
            self._in_flight_sources.append((child, read))
        else:
            child.set_function(read)

    def watch_breaker(self, queue: str, breaker: CircuitBreaker) -> None:
        """Follow a circuit breaker's state (once per breaker)."""
        if id(breaker) in self._breakers:
            return
        self._breakers.add(id(breaker))
        child = self.breaker_state.labels(queue)
        child.set(BREAKER_VALUES[breaker.state])
        breaker.add_listener(lambda _old, new: child.set(BREAKER_VALUES[new]))

    def sample(self) -> None:
        """Copy sampled values (in-flight counts) into the multiprocess files."""
        for child, read in self._in_flight_sources:
            child.set(read())

    # -- hooks -----------------------------------------------------------------------

    def outcome(
        self,
        queue: str,
        outcome: str,
        seconds: float | None,
        *,
        delay_ms: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """`OutcomeObserver`: count one settled delivery."""
        q = self._queues.get(queue)
        if q is None:
            self.add_queue(queue)
            q = self._queues[queue]
        q.outcomes[outcome].inc()
        if seconds is not None:
            q.seconds.observe(seconds)
        if delay_ms is not None and outcome == "retry":
            tier = q.retries.get(delay_ms)
            if tier is None:
                tier = q.retries[delay_ms] = self.retries.labels(queue, format_duration(delay_ms))
            tier.inc()
        elif outcome == "dead_letter" and error is not None:
            kind = type(error)
            child = q.dead_letters.get(kind)
            if child is None:
                child = q.dead_letters[kind] = self.dead_letters.labels(queue, kind.__name__)
            child.inc()

    def add_exchange(self, exchange: str) -> tuple[dict[str, Any], Any]:
        """Bind the children of an exchange rabbitflow publishes to (``""``: the default)."""
        children = self._exchanges.get(exchange)
        if children is None:
            label = exchange or DEFAULT_EXCHANGE
            children = self._exchanges[exchange] = (
                {o: self.published.labels(label, o) for o in PUBLISH_OUTCOMES},
                self.confirm_seconds.labels(label),
            )
        return children

    def publish(self, exchange: str, outcome: str, seconds: float) -> None:
        """`PublishObserver`: count one publish and, when the broker answered, its latency."""
        children = self._exchanges.get(exchange)
        if children is None:
            children = self.add_exchange(exchange)
        counters, latency = children
        counters[outcome].inc()
        if outcome != "failed":
            latency.observe(seconds)

    def depth(self, queue: str, messages: int | None, *, dead_letters: bool = False) -> None:
        """Record a polled depth; None (the queue is gone) removes the sample."""
        gauge = self.dead_letter_messages if dead_letters else self.queue_messages
        if messages is None:
            with contextlib.suppress(KeyError):
                gauge.remove(queue)
        else:
            gauge.labels(queue).set(messages)

    def blocked(self, connection: str, value: bool) -> None:
        """Record whether the broker blocks ``connection`` (``worker`` or ``publisher``)."""
        self.connection_blocked.labels(connection).set(1 if value else 0)


__all__ = ["OUTCOMES", "PUBLISH_OUTCOMES", "Metrics"]
