"""The worker's observability loop: queue depths, blocked connections, and (under a
supervisor) the in-flight samples and health file the parent reads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from rabbitflow.amqp.connection import is_blocked
from rabbitflow.amqp.depth import DepthProbe
from rabbitflow.health import Health, write_health
from rabbitflow.metrics import Metrics
from rabbitflow.topology.expand import dead_letter_route, physical_queues
from rabbitflow.topology.schema import DeadLetterTarget, Topology, dead_letter_queue_name

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

log = structlog.get_logger("rabbitflow.monitor")

TICK = 0.25
"""Seconds between samples of in-flight counts, health and blocked state."""


def depth_targets(
    topology: Topology, queues: Iterable[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """The queues whose depth is polled for handlers of ``queues``.

    Returns:
        The consumed queues (a partitioned queue's partitions), and (queue, dead-letter
        queue) pairs: ``Q.dlq`` for ``dead_letter: true``; for the mapping form, the
        queues of the files bound to that exchange.
    """
    consumed: list[str] = []
    dead: list[tuple[str, str]] = []
    for name in dict.fromkeys(queues):
        consumed += physical_queues(topology, name)
        declared = topology.queues.get(name)
        if declared is None or dead_letter_route(name, declared) is None:
            continue
        target = declared.dead_letters
        if isinstance(target, DeadLetterTarget):
            dead += [
                (name, q)
                for q, spec in topology.queues.items()
                if any(b.exchange == target.exchange for b in spec.bind)
            ]
        else:
            dead.append((name, dead_letter_queue_name(name)))
    return consumed, dead


class Monitor:
    """Runs beside a worker until stopped.

    Args:
        metrics: where values go (None: only blocked-state logging and health files).
        connection: the worker's consuming connection now (None while reconnecting).
        publisher: the publisher's connection now, if open.
        health: the worker's health now.
        consumed, dead_letters: the queues to poll (see `depth_targets`).
        poll_interval: seconds between depth polls.
        health_dir: a supervisor's shared directory to write health into, if any.
    """

    def __init__(
        self,
        metrics: Metrics | None,
        *,
        connection: Callable[[], AbstractConnection | None],
        publisher: Callable[[], AbstractConnection | None],
        health: Callable[[], Health],
        consumed: Sequence[str],
        dead_letters: Sequence[tuple[str, str]],
        poll_interval: float,
        health_dir: str | None = None,
    ) -> None:
        self.metrics = metrics
        self._connection = connection
        self._connections = {"worker": connection, "publisher": publisher}
        self._health = health
        self.consumed = list(consumed)
        self.dead_letters = list(dead_letters)
        self.poll_interval = poll_interval
        self.health_dir = health_dir
        self._probe = DepthProbe()
        self._blocked: dict[str, bool] = {}
        self._written: Health | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rabbitflow-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._probe.close()
        if self.health_dir is not None:
            write_health(self.health_dir, Health(False, ("worker stopping",)))

    async def _run(self) -> None:
        next_poll = 0.0
        while True:
            try:
                self.tick()
                if self.metrics is not None and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_interval
                    await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # observability must never take the worker down
                log.warning("monitor failed", reason=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(TICK)

    def tick(self) -> None:
        """Blocked-state transitions, in-flight samples, the health file."""
        for name, current in self._connections.items():
            connection = current()
            blocked = connection is not None and is_blocked(connection)
            if blocked != self._blocked.get(name, False):
                if blocked:
                    log.warning(
                        "connection blocked by the broker (memory or disk alarm)", connection=name
                    )
                else:
                    log.info("connection unblocked", connection=name)
            self._blocked[name] = blocked
            if self.metrics is not None:
                self.metrics.blocked(name, blocked)
        if self.metrics is not None and self.metrics.multiprocess:
            self.metrics.sample()
        if self.health_dir is not None:
            health = self._health()
            if health != self._written:
                write_health(self.health_dir, health)
                self._written = health

    async def poll(self) -> None:
        """Read every depth once by passive declares on the worker's connection."""
        assert self.metrics is not None
        connection = self._connection()
        if connection is None or connection.is_closed:
            return
        names = self.consumed + [dlq for _, dlq in self.dead_letters]
        depths = await self._probe.depths(connection, names)
        for queue in self.consumed:
            self.metrics.depth(queue, depths.get(queue))
        totals: dict[str, int | None] = {}
        for queue, dlq in self.dead_letters:
            value = depths.get(dlq)
            if value is not None:
                totals[queue] = (totals.get(queue) or 0) + value
            else:
                totals.setdefault(queue, None)
        for queue, total in totals.items():
            self.metrics.depth(queue, total, dead_letters=True)


__all__ = ["Monitor", "depth_targets"]
