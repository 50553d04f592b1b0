"""`App`: the façade that wires topology, handlers, producer and worker together."""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from rabbitflow.amqp.rpc import Replies
from rabbitflow.errors import ConfigError, HandlerError, LifespanError
from rabbitflow.exposition import Server, serve
from rabbitflow.health import Health, worker_health
from rabbitflow.logs import configure_logging
from rabbitflow.metrics import Metrics
from rabbitflow.monitor import Monitor, depth_targets
from rabbitflow.producer import Producer
from rabbitflow.router import Router
from rabbitflow.settings import DEFAULT_PREFETCH, Settings
from rabbitflow.topology.expand import (
    dead_letter_route,
    delayed_exchanges,
    expand,
    retry_delays,
)
from rabbitflow.topology.loader import load_topology
from rabbitflow.topology.schema import RetryPolicy, Topology
from rabbitflow.topology.validate import did_you_mean
from rabbitflow.tracing import load as load_tracing
from rabbitflow.worker.breaker import CircuitBreaker
from rabbitflow.worker.consumer import QueueConsumer
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
from rabbitflow.worker.idempotency import IdempotencyStore
from rabbitflow.worker.message import Message
from rabbitflow.worker.pipeline import DeliveryObserver, Middleware, SettledObserver
from rabbitflow.worker.runtime import Worker, stream_route

if TYPE_CHECKING:
    from rabbitflow.streams.offsets import OffsetStore

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=Middleware)
S = TypeVar("S", bound=SettledObserver)
TopologySource = str | Path | Sequence[str | Path] | Topology
Lifespan = Callable[["App"], AbstractAsyncContextManager[object]]
"""``lifespan(app)``: entered before any consumer starts, exited after they all stopped."""


class State(SimpleNamespace):
    """`App.state`: a plain namespace for what the lifespan opens (``app.state.db``)."""


log = structlog.get_logger("rabbitflow")


class App:
    """Handlers for the queues of a topology, and the means to run and publish.

    Args:
        topology: a topology file, several (merged), or a `Topology`; may be given later
            (``rabbitflow run --topology``).
        url: AMQP URL(s), comma-separated; default ``RABBITFLOW_URL``.
        declare: declare the topology when starting.
        settings: settings to use instead of reading the environment.
        lifespan: ``lifespan(app)``, an async context manager entered after connecting
            and declaring and before any consumer starts, and exited after consumers
            stopped and in-flight work settled; `state` holds what it opens.
    """

    def __init__(
        self,
        topology: TopologySource | None = None,
        *,
        url: str | None = None,
        declare: bool = True,
        settings: Settings | None = None,
        lifespan: Lifespan | None = None,
    ) -> None:
        settings = settings or Settings()
        if url is not None:
            settings = settings.model_copy(update={"url": url})
        self.declare = declare
        self.topology: Topology | None = None
        self._delayed_of: Topology | None = None
        """The topology the publisher's delayed exchanges were taken from."""
        if topology is not None:
            self.use_topology(topology)
        self.handlers: dict[str, HandlerSpec] = {}
        self.lifespan = lifespan
        self.state = State()
        """A plain namespace for the lifespan's objects."""
        self.middlewares: list[Middleware] = []
        """``@app.middleware`` functions, outermost first."""
        self.settled_observers: list[SettledObserver] = []
        """``@app.on_settled`` functions, in registration order."""
        self.delivery_observers: list[DeliveryObserver] = []
        """rabbitflow's own observers of whole deliveries (the test harness adds one)."""
        self.worker: Worker | None = None
        self._exits: AsyncExitStack | None = None
        self._monitor: Monitor | None = None
        self._server: Server | None = None
        self._use_settings(settings)

    def _use_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics: Metrics | None = None
        if settings.metrics_dir is not None:
            self.metrics = Metrics(multiprocess=True)
        elif settings.metrics_port is not None:
            self.metrics = Metrics()
        self.producer = Producer(
            settings=settings,
            name="rabbitflow-publisher",
            observer=self.metrics.publish if self.metrics else None,
        )

    def configure(self, settings: Settings | None = None, **changes: Any) -> None:
        """Replace the settings (or change some), before the app starts; rebuilds the
        producer and the metrics.

        Metrics are collected when ``metrics_port`` is set (or under a ``--processes``
        supervisor); otherwise the hot path carries no metrics hooks at all.

        Example: ``app.configure(url="amqp://guest:guest@localhost/test")``.
        """
        if self.worker is not None:
            raise ConfigError("configure() must be called before the app starts")
        base = settings or self.settings
        self._use_settings(Settings(**{**base.model_dump(), **changes}) if changes else base)

    def use_topology(self, topology: TopologySource) -> None:
        """Load (and replace) the topology; checks registered handlers against it."""
        self.topology = load_topology(topology)
        for queue in getattr(self, "handlers", {}):
            self._check_queue(queue)

    def middleware(self, func: M) -> M:
        """Register ``async def mw(message, call_next)`` around every handler run
        (DESIGN.md §7); the first registered is the outermost.

        ``call_next(message)`` runs the inner middlewares and the handler and returns its
        result or raises its exception; what the middleware returns or raises decides the
        outcome as a handler's would (`Reject` dead-letters, other exceptions go by the
        retry filters).

        Raises:
            HandlerError: ``func`` is not an ``async def`` of two parameters.
            ConfigError: the app has started.
        """
        self._check_hook(func, "middleware", 2)
        self.middlewares.append(func)
        return func

    def on_settled(self, func: S) -> S:
        """Register ``async def f(message, outcome)``, called once per delivery after its
        `Outcome` was carried out (acked, or its copy confirmed and the original acked).
        An exception inside it is logged and ignored.

        Raises:
            HandlerError: ``func`` is not an ``async def`` of two parameters.
            ConfigError: the app has started.
        """
        self._check_hook(func, "on_settled", 2)
        self.settled_observers.append(func)
        return func

    def _check_hook(self, func: Callable[..., Any], kind: str, arity: int) -> None:
        if self.worker is not None:
            raise ConfigError(f"@app.{kind} must be used before the app starts")
        name = getattr(func, "__qualname__", repr(func))
        if not inspect.iscoroutinefunction(func):
            raise HandlerError(f"@app.{kind} {name}: must be an async def")
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):
            return
        if len(params) != arity:
            raise HandlerError(
                f"@app.{kind} {name}: takes (message, "
                + ("call_next" if kind == "middleware" else "outcome")
                + f"), not {len(params)} parameter(s)"
            )

    def include_router(self, router: Router) -> None:
        """Add a router's handlers (DESIGN.md §7).

        Raises:
            HandlerError: a queue the topology lacks (with "did you mean"), or a queue that
                has a handler already; nothing of the router is added then.
        """
        for queue, spec in router.handlers.items():
            self._check_free(queue, spec)
            self._check_queue(queue)
        self.handlers.update(router.handlers)

    def _check_free(self, queue: str, spec: HandlerSpec) -> None:
        taken = self.handlers.get(queue)
        if taken is not None:
            raise HandlerError(
                f"queue {queue!r} has a handler already: {taken.name} (cannot add {spec.name})"
            )

    def _check_queue(self, queue: str) -> None:
        if self.topology is not None and queue not in self.topology.queues:
            raise HandlerError(
                f"no queue {queue!r} in the topology" + did_you_mean(queue, self.topology.queues)
            )

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
        """Register the decorated function as the handler of ``queue``.

        Args:
            queue: a queue the topology declares.
            prefetch: deliveries in the worker at once (default: ``--prefetch``,
                ``RABBITFLOW_PREFETCH``, else 32).
            timeout: seconds (or a duration such as ``"30s"``) after which a run counts
                as failed.
            idempotency: a store (`MemoryStore`, `SQLiteStore`, `RedisStore`): a message
                whose key was processed successfully before is acked without running the
                handler again.
            idempotency_key: the key of a message; its ``message_id`` by default.
            circuit_breaker: stops consuming the queue after consecutive failures and
                tries one message again after its reset time.
            retry_on: exception classes retried per the queue's policy (default: every
                `Exception`).
            dead_letter_on: exception classes dead-lettered at once. For a failure, the
                nearest class of the exception's MRO found in either tuple decides; in
                neither, it is dead-lettered. `Reject` always dead-letters.
            delivery: ``"at_least_once"`` (default: acked after the run) or
                ``"at_most_once"``: acked on arrival, before the handler runs; a failure
                is logged and counted as ``dropped``, never retried or dead-lettered
                (DESIGN.md §8). Prefetch still bounds the runs at once.
            batch: ``Batch(max_size, max_wait)``: the body parameter is ``list[T]`` (and
                a `Message` one ``list[Message]``); see DESIGN.md §8.
            offset: on a stream queue, where to start without a stored position:
                ``"first"``, ``"last"``, ``"next"`` (default), an int offset, a
                `datetime`, or a duration (``"1h"``, a `timedelta`); DESIGN.md §9.
            consumer_name: on a stream, the name the stored position and the DLQ
                ``<stream>.<consumer_name>.dlq`` go by (default: the function's name).
            offsets: on a stream, an offset store (`MemoryOffsets`, `SQLiteOffsets`,
                `RedisOffsets`): a restart resumes right after the last settled event.
            retry: on a stream, the in-worker retry schedule (`Retry(...)`, a `RetryPolicy`, or a
                mapping of its fields; default 3 retries from 1 s, exponential).

        Raises:
            HandlerError: the queue is not in the topology, has a handler already, or the
                function's signature cannot be served.
        """

        def register(func: F) -> F:
            if queue in self.handlers:
                raise HandlerError(
                    f"queue {queue!r} has a handler already: {self.handlers[queue].name}"
                )
            self._check_queue(queue)
            spec = inspect_handler(
                func,
                queue,
                prefetch=prefetch,
                timeout=timeout,
                options=HandlerOptions(
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
                ),
            )
            if self.topology is not None:
                stream_route(self.topology, spec)  # stream options on a stream only
            self.handlers[queue] = spec
            return func

        return register

    # -- lifecycle -------------------------------------------------------------------

    async def start(
        self,
        queues: Collection[str] | None = None,
        *,
        prefetch: int | None = None,
        exit_on_cancel: bool = False,
    ) -> None:
        """Connect, declare the topology (unless ``declare=False``) and start consuming.

        Args:
            queues: limit the handlers run to these queues.
            prefetch: default prefetch for handlers that set none.
        """
        if self.worker is not None:
            raise ConfigError("app already started")
        if self.topology is None:
            raise ConfigError("no topology: pass App(topology=...) or --topology FILE")
        # Once, and only if the application has not configured structlog itself: without
        # it structlog's defaults would print every debug event of the hot path.
        configure_logging(self.settings.log_format, self.settings.log_level)
        for queue in self.handlers:
            self._check_queue(queue)
        specs = list(self.handlers.values())
        if queues is not None:
            unknown = [q for q in queues if q not in self.handlers]
            if unknown:
                raise ConfigError(
                    f"no handler for queue(s) {', '.join(unknown)}"
                    + did_you_mean(unknown[0], self.handlers)
                )
            specs = [s for s in specs if s.queue in queues]
        default_prefetch = prefetch or self.settings.prefetch or DEFAULT_PREFETCH
        metrics = self.metrics
        worker = Worker(
            self.topology,
            expand(self.topology) if self.declare else None,
            specs,
            self.settings,
            self.producer.publisher,
            prefetch=default_prefetch,
            exit_on_cancel=exit_on_cancel,
            observer=metrics.outcome if metrics else None,
            tracer=load_tracing(self.settings.tracing),
            middlewares=self.middlewares,
            on_settled=self.settled_observers,
            observers=self.delivery_observers,
        )
        if metrics is not None:
            self._watch(metrics, worker, specs)
        port = self.settings.metrics_port
        if port is not None and self.settings.metrics_dir is None and metrics is not None:
            self._server = serve(port, metrics.registry, self.health)
            log.info("serving /metrics and /healthz", port=self._server.port)
        exits = AsyncExitStack()
        try:
            await worker.start(before_consuming=lambda: self._enter_lifespan(exits))
        except BaseException:
            await exits.aclose()
            self._close_server()
            raise
        self.worker = worker
        self._exits = exits
        consumed, dead = depth_targets(self.topology, [s.queue for s in specs])
        self._monitor = Monitor(
            metrics,
            connection=lambda: worker.connection if worker.connected else None,
            publisher=lambda: self.producer.link.current,
            health=self.health,
            consumed=consumed,
            dead_letters=dead,
            poll_interval=self.settings.queue_poll_interval,
            health_dir=self.settings.metrics_dir,
        )
        self._monitor.start()

    async def _enter_lifespan(self, exits: AsyncExitStack) -> None:
        if self.lifespan is None:
            return
        try:
            await exits.enter_async_context(self.lifespan(self))
        except Exception as exc:
            name = getattr(self.lifespan, "__qualname__", "lifespan")
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise LifespanError(
                f"lifespan {name} failed on start: {text}; no consumer was started"
            ) from exc

    def _watch(self, metrics: Metrics, worker: Worker, specs: list[HandlerSpec]) -> None:
        assert self.topology is not None
        for spec in specs:
            queue = self.topology.queues[spec.queue]
            metrics.add_queue(spec.queue, retry_delays(queue))
            # Where the worker's own copies go, exported at 0 from the start.
            if queue.retry is not None:
                metrics.add_exchange("")
            route = dead_letter_route(spec.queue, queue)
            if route is not None:
                metrics.add_exchange(route[0])
            consumers = [c for c in worker.consumers if c.route.logical == spec.queue]
            metrics.watch_in_flight(spec.queue, _in_flight_of(consumers))
            breaker = spec.options.circuit_breaker
            if breaker is not None:
                metrics.watch_breaker(spec.queue, breaker)

    def health(self) -> Health:
        """What ``/healthz`` answers: ok while connected and every consumer is active
        (paused by an open circuit breaker counts as active) and none holds a delivery
        far longer than its handler's timeout allows (`stuck_after`)."""
        worker = self.worker
        if worker is None:
            return worker_health(False, False, [])
        stuck = []
        for c in worker.consumers:
            seconds = c.stuck_for()
            if seconds is not None and c.stuck_after is not None:
                stuck.append((c.route.queue, seconds, c.stuck_after))
        return worker_health(
            True, worker.connected, [(c.route.queue, c.state) for c in worker.consumers], stuck
        )

    def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop consuming gracefully (see `Worker.stop`), then close the producer and
        the metrics endpoint."""
        monitor, self._monitor = self._monitor, None
        worker, self.worker = self.worker, None
        exits, self._exits = self._exits, None
        try:
            if monitor is not None:
                await monitor.stop()
            if worker is not None:
                await worker.stop(timeout)
        finally:
            try:
                if exits is not None:
                    await self._exit_lifespan(exits)
            finally:
                await self._close_producer()

    async def _exit_lifespan(self, exits: AsyncExitStack) -> None:
        # After every consumer stopped and its in-flight work settled (Worker.stop).
        try:
            await exits.aclose()
        except Exception as exc:
            log.error("lifespan failed on shutdown", error=f"{type(exc).__name__}: {exc}")

    async def _close_producer(self) -> None:
        try:
            await self.producer.close()
        finally:
            self._close_server()

    async def close(self) -> None:
        """Close everything the app opened: the worker if it runs (as `stop`), and the
        producer's connection that ``app.publish`` or ``app.request`` opened on first use.

        A script that only publishes needs no ``async with app`` (which would also run the
        handlers and take messages from the real workers): publish, then ``await
        app.close()`` — or use a `Producer`. Leaving it open is harmless too: the
        connection closes with the event loop.
        """
        await self.stop()

    @property
    def healthy(self) -> bool:
        """True while connected and every consumer is active."""
        return self.health().ok

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run(
        self,
        queues: Collection[str] | None = None,
        *,
        prefetch: int | None = None,
        exit_on_cancel: bool = False,
    ) -> None:
        """Run the handlers until SIGINT or SIGTERM, then stop gracefully and return."""
        asyncio.run(self.serve(queues, prefetch=prefetch, exit_on_cancel=exit_on_cancel))

    async def serve(
        self,
        queues: Collection[str] | None = None,
        *,
        prefetch: int | None = None,
        exit_on_cancel: bool = False,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Start, wait for SIGINT/SIGTERM (or a fatal worker error), stop.

        Raises:
            RabbitflowError: when the worker gave up (e.g. a cancelled consumer with
                ``exit_on_cancel``), after stopping.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start(queues, prefetch=prefetch, exit_on_cancel=exit_on_cancel)
            assert self.worker is not None
            worker = self.worker
            if ready is not None:
                ready()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(worker.stopped.wait()),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            log.info("signal received, stopping" if stop.is_set() else "worker gave up")
        finally:
            failed = self.worker.failed if self.worker is not None else None
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if failed is not None:
            raise failed

    # -- publishing ------------------------------------------------------------------

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        persistent: bool = True,
        mandatory: bool = True,
        expiration: str | int | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        confirm: bool = True,
        delay: float | str | timedelta | None = None,
        compress: bool | None = None,
    ) -> str:
        """Publish and return once the broker confirmed it; returns the ``message_id``.

        ``confirm=False``: fire-and-forget; ``delay``: delivered after it (the exchange needs
        ``delayed: true``); ``compress``: gzip the body (DESIGN.md §8).

        Raises:
            PublishNacked, Unroutable, ExchangeNotFound, PublishTimeout, MessageTooLarge.
        """
        topology, publisher = self.topology, self.producer.publisher
        if topology is not None and (topology is not self._delayed_of or publisher.delayed is None):
            # Once per topology (and publisher), not per publish: the scan is linear in
            # the topology's exchanges.
            publisher.delayed = frozenset(delayed_exchanges(topology))
            self._delayed_of = topology
        return await self.producer.publish(
            exchange,
            routing_key,
            body,
            headers=headers,
            message_id=message_id,
            correlation_id=correlation_id,
            persistent=persistent,
            mandatory=mandatory,
            expiration=expiration,
            priority=priority,
            timeout=timeout,
            confirm=confirm,
            delay=delay,
            compress=compress,
        )

    async def request(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        timeout: float = 5.0,
        model: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send a request and await its reply over direct reply-to.

        Raises:
            RequestTimeout: no reply within ``timeout`` seconds.
            RemoteError: the responder's handler failed.
        """
        return await self.producer.request(
            exchange, routing_key, body, timeout=timeout, model=model, headers=headers
        )

    async def gather(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        timeout: float = 5.0,
        expected: int | None = None,
        model: Any = None,
    ) -> Replies:
        """Scatter a request to every responder; gather replies until ``expected`` or
        ``timeout``; returns the answers that arrived (a list), error replies apart in
        its ``errors``."""
        return await self.producer.gather(
            exchange, routing_key, body, timeout=timeout, expected=expected, model=model
        )


def _in_flight_of(consumers: list[QueueConsumer]) -> Callable[[], int]:
    return lambda: sum(c.in_flight for c in consumers)
