"""Run an `App` in-process for a test: publish, wait (bounded) until its queues are idle
or a condition holds, then look at what each handler received, what was retried and what
was dead-lettered.

Works the same on a real broker (``amqp://``) and on the in-memory one (``memory://``);
on the in-memory broker, waiting moves the virtual clock to the next expiry whenever
nothing else can happen, so retry delays pass at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiormq
from aio_pika.abc import AbstractConnection
from pamqp.commands import Basic

from rabbitflow.amqp.connection import connect
from rabbitflow.errors import WaitTimeout
from rabbitflow.topology.expand import Role, dead_letter_route, expand
from rabbitflow.topology.schema import Topology
from rabbitflow.worker.message import Message
from rabbitflow.worker.outcome import Outcome
from rabbitflow.worker.pipeline import Delivery

if TYPE_CHECKING:
    from rabbitflow.app import App
    from rabbitflow.testing.memory import MemoryBroker

POLL = 0.01
"""Seconds between two looks at a real broker's queues."""


@dataclass(frozen=True)
class Call:
    """One run of a handler."""

    queue: str
    body: Any
    """The decoded body the handler received."""
    message: Message
    error: BaseException | None
    """What the handler raised (a `HandlerTimeout` for an async timeout), or None."""
    outcome: str
    """``running`` while the handler runs, then the `Outcome.kind` the worker carried
    out: ``ack``, ``retry``, ``dead_letter``, ``nack`` or ``requeue`` (cancelled by a
    shutdown or a lost channel, or a copy the broker did not confirm)."""

    @property
    def attempt(self) -> int:
        return self.message.attempt


@dataclass(frozen=True)
class DeadLetter:
    """A message found in a dead-letter queue (left there)."""

    queue: str
    """The dead-letter queue it was read from."""
    body: bytes
    headers: Mapping[str, Any]
    routing_key: str
    exchange: str
    properties: Basic.Properties

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        """rabbitflow's ``x-rabbitflow-error`` header."""
        return _text(self.headers.get("x-rabbitflow-error"))

    @property
    def attempt(self) -> int:
        """The attempt that failed last (``x-rabbitflow-attempt``; 1 when absent)."""
        return int(self.headers.get("x-rabbitflow-attempt") or 1)

    @property
    def x_death(self) -> list[Mapping[str, Any]]:
        """The broker's ``x-death`` entries (messages the broker dead-lettered)."""
        return list(self.headers.get("x-death") or [])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Harness:
    """A running `App` and what happened to its messages. Made by `run_app`."""

    app: App
    url: str
    broker: MemoryBroker | None
    """The in-memory broker, when the URL is ``memory://``."""
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: bool = False
    _probe: AbstractConnection | None = None
    _recorder: _Recorder | None = None

    async def close(self) -> None:
        """Close the connection used to look at queues."""
        probe, self._probe = self._probe, None
        if probe is not None and not probe.is_closed:
            await probe.close()

    # -- what happened -------------------------------------------------------------

    def received(self, queue: str) -> list[Any]:
        """The bodies the handler of ``queue`` received, in order (retries included)."""
        return [c.body for c in self.calls_of(queue)]

    def calls_of(self, queue: str) -> list[Call]:
        """Every run of the handler of ``queue``, in order."""
        with self._lock:
            return [c for c in self.calls if c.queue == queue]

    def retried(self, queue: str) -> list[Call]:
        """The runs of ``queue``'s handler that failed and were sent to a retry queue."""
        return [c for c in self.calls_of(queue) if c.outcome == "retry"]

    def failed(self, queue: str) -> list[Call]:
        """The runs of ``queue``'s handler that raised."""
        return [c for c in self.calls_of(queue) if c.error is not None]

    def dead_letter_queues(self, queue: str) -> list[str]:
        """The queues bound to ``queue``'s dead-letter exchange (``Q.dlq`` for
        ``dead_letter: true``; for a partitioned queue, the one all partitions share)."""
        topology = self._topology()
        declared = topology.queues[queue]
        route = dead_letter_route(queue, declared)
        dlx = route[0] if route is not None else declared.arguments.get("x-dead-letter-exchange")
        if dlx is None:
            return []
        return [
            b.destination
            for b in expand(topology).bindings
            if b.source == dlx and b.destination_type == "queue"
        ]

    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages in ``queue``'s dead-letter queue(s), oldest first, left in place."""
        out: list[DeadLetter] = []
        for dlq in self.dead_letter_queues(queue):
            out.extend(await peek(self.url, dlq))
        return out

    # -- acting --------------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, body: object, **options: Any) -> str:
        """Publish through the app (confirmed); see `App.publish`."""
        return await self.app.publish(exchange, routing_key, body, **options)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: on the in-memory broker the virtual clock jumps; on a real
        broker the test sleeps."""
        if self.broker is not None:
            self.broker.advance(seconds)
            await _settle()
        else:
            await asyncio.sleep(seconds)

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
        """Wait until ``condition()`` is true; on the in-memory broker the clock moves to
        the next expiry whenever nothing else can happen.

        Raises:
            WaitTimeout: not true within ``timeout`` real seconds.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise WaitTimeout(f"condition not met within {timeout:g}s")
            await self._step(self._all_queues())

    async def wait_idle(self, *, timeout: float = 10.0) -> None:
        """Wait until the app's queues and their retry queues are empty and no handler
        runs (two looks in a row), so every published message has been settled for good.

        Raises:
            WaitTimeout: still busy after ``timeout`` real seconds.
        """
        watched = self._watched()
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"queues {', '.join(sorted(watched))} not idle within {timeout:g}s"
                )
            busy = await self._busy(watched)
            quiet = 0 if busy else quiet + 1
            if busy or quiet < 2:
                await self._step(watched)

    async def wait_for_calls(self, queue: str, count: int, *, timeout: float = 10.0) -> None:
        """Wait until the handler of ``queue`` ran ``count`` times."""
        await self.wait_until(lambda: len(self.calls_of(queue)) >= count, timeout=timeout)

    # -- internals -----------------------------------------------------------------

    def _topology(self) -> Topology:
        assert self.app.topology is not None
        return self.app.topology

    def _watched(self) -> set[str]:
        """The queues consumed by the app, and their retry queues. Not streams: a stream
        keeps its events, so its depth never drains (its consumers' in-flight count and
        the broker's unacked deliveries tell when it is idle)."""
        decls = expand(self._topology())
        consumed = {c.route.queue for c in self._consumers() if c.route.stream is None}
        retry = {
            q.name
            for q in decls.queues
            if q.role is Role.RETRY and q.arguments.get("x-dead-letter-routing-key") in consumed
        }
        return consumed | retry

    def _all_queues(self) -> set[str]:
        return set(self.broker.queues) if self.broker is not None else self._watched()

    def _consumers(self) -> list[Any]:
        worker = self.app.worker
        return list(worker.consumers) if worker is not None else []

    async def _busy(self, watched: set[str]) -> bool:
        if any(c.in_flight for c in self._consumers()):
            return True
        if self.broker is not None:
            await _settle()
            broker = self.broker
            return not broker.idle or any(broker.depth(q) for q in watched if q in broker.queues)
        if self._probe is None or self._probe.is_closed:
            self._probe = await connect(self.url, name="rabbitflow-testing")
        return any(n for n in (await queue_depths(self._probe, watched)).values())

    async def _step(self, watched: set[str]) -> None:
        """Let time pass: on the in-memory broker, jump to the next expiry in ``watched``
        once nothing else can happen; else sleep a little."""
        broker = self.broker
        if broker is None:
            await asyncio.sleep(POLL)
            return
        await _settle()
        if broker.idle and not any(c.in_flight for c in self._consumers()):
            due = [
                q.ready[0].expires_at
                for name, q in broker.queues.items()
                if name in watched and q.ready and q.ready[0].expires_at is not None
            ]
            if due:
                broker.advance(max(min(due) - broker.now, 0.0))
                return
        await asyncio.sleep(0.001)

    def instrument(self) -> None:
        """Record every handler run of the app (call before it starts): the harness is one
        more observer of the worker's settle step, so each `Call.outcome` is what the
        worker did, never a guess."""
        if self._recorder is None:
            self._recorder = _Recorder(self)
        if self._recorder not in self.app.delivery_observers:
            self.app.delivery_observers.append(self._recorder)

    def restore(self) -> None:
        if self._recorder is not None:
            with contextlib.suppress(ValueError):
                self.app.delivery_observers.remove(self._recorder)


class _Recorder:
    """Turns the pipeline's events into `Call`s: ``running`` when the handler starts,
    then the outcome the settle step carried out."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self._running: dict[int, int] = {}
        """id(delivery) → index of its `Call`."""

    def started(self, d: Delivery) -> None:
        harness = self.harness
        with harness._lock:
            harness.calls.append(Call(d.message.queue, d.body, d.message, None, "running"))
            self._running[id(d)] = len(harness.calls) - 1

    def settled(self, d: Delivery, outcome: Outcome) -> None:
        if not d.ran:
            return  # a duplicate, a body that did not decode, a middleware that refused
        harness = self.harness
        with harness._lock:
            index = self._running.pop(id(d), None)
            if index is None:
                return
            call = harness.calls[index]
            harness.calls[index] = replace(call, error=d.error, outcome=outcome.kind)


async def _settle(rounds: int = 5) -> None:
    """Let callbacks and delivery tasks scheduled by the in-memory broker run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def run_app(
    app: App,
    url: str | None = None,
    *,
    queues: list[str] | None = None,
    shutdown_timeout: float = 5.0,
) -> AsyncIterator[Harness]:
    """Start ``app`` against ``url`` (default: the app's own) and record its handlers.

    Leaving stops the app, giving running handlers ``shutdown_timeout`` seconds (not the
    production default of 30, so a test that fails mid-handler ends quickly).

    Example:
        async with run_app(app, url) as harness:
            await harness.publish("orders", "order.placed", {"order_id": "1"})
            await harness.wait_idle()
            assert harness.received("payments.charge") == [{"order_id": "1"}]
    """
    # A test process is not a worker: its garbage collector stays as the runner has it.
    changes: dict[str, Any] = {"gc_tuning": False}
    if url is not None:
        changes["url"] = url
    app.configure(None, **changes)
    url = app.settings.url
    broker = None
    if urlsplit(url).scheme == "memory":
        from rabbitflow.testing.memory import broker_for

        broker = broker_for(url)
    harness = Harness(app, url, broker)
    harness.instrument()
    try:
        await app.start(queues)
        yield harness
    finally:
        harness.stopping = True
        try:
            await app.stop(shutdown_timeout)
        finally:
            harness.restore()
            await harness.close()


async def peek(url: str, queue: str, *, limit: int = 10_000) -> list[DeadLetter]:
    """The messages of ``queue``, oldest first, without removing them: they are fetched
    unacknowledged and given back when the channel closes."""
    connection = await connect(url, name="rabbitflow-testing")
    try:
        channel = await connection.channel(publisher_confirms=False)
        raw = await channel.get_underlay_channel()
        out = []
        for _ in range(limit):
            got = await raw.basic_get(queue, no_ack=False)
            if not isinstance(got.delivery, Basic.GetOk):
                break
            props = got.header.properties
            out.append(
                DeadLetter(
                    queue,
                    got.body,
                    dict(props.headers or {}),
                    got.delivery.routing_key or "",
                    got.delivery.exchange,
                    props,
                )
            )
        await channel.close()
        return out
    finally:
        await connection.close()


async def queue_depths(connection: AbstractConnection, queues: set[str]) -> dict[str, int]:
    """Ready messages per queue (a passive declare each; missing queues count 0)."""
    out: dict[str, int] = {}
    channel = await connection.channel(publisher_confirms=False)
    try:
        for name in sorted(queues):
            if channel.is_closed:
                channel = await connection.channel(publisher_confirms=False)
            raw = await channel.get_underlay_channel()
            try:
                ok = await raw.queue_declare(name, passive=True)
                out[name] = int(ok.message_count or 0)
            except aiormq.exceptions.ChannelNotFoundEntity:
                out[name] = 0  # the broker closed the channel; the next name reopens one
    finally:
        if not channel.is_closed:
            await channel.close()
    return out
