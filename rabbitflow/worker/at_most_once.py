"""At-most-once flow control (DESIGN.md §8): acked on arrival, before the run, and still
bounded by the prefetch.

An ack frees the broker's prefetch window at once, so the bound moves here: deliveries
wait, unacked (a crash loses none of them), for one of ``prefetch`` runs. Once
deliveries stop arriving for a loop turn, or a quarter of the prefetch waits, as many as
there are free runs are acked with one ``basic.ack(multiple=True)`` — every ack frame is
a socket write — and only then run. Runs start in delivery order, so the ack never
covers a delivery still waiting.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiormq.abc import DeliveredMessage

from rabbitflow.amqp.transport import CONNECTION_LOST, delivery_tag

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class AtMostOnceRuns:
    """The deliveries of one at-most-once consumer: waiting (unacked) and running."""

    def __init__(
        self,
        prefetch: int,
        *,
        run: Callable[[DeliveredMessage], Coroutine[Any, Any, None]],
        spawn: Spawn,
        tasks: dict[asyncio.Task[Any], float],
        late_ack: Callable[[BaseException, int], None],
        log: Any,
    ) -> None:
        self.prefetch = prefetch
        self._run = run
        """Runs one delivery through the pipeline (never raises)."""
        self._spawn = spawn
        """Starts a task the consumer tracks (and waits for when it stops)."""
        self._tasks = tasks
        self._late_ack = late_ack
        self._log = log
        self.waiting: collections.deque[DeliveredMessage] = collections.deque()
        self.running = 0
        self.stopping = False
        self._scheduled = False
        """`_start_waiting` is scheduled for the next loop turn."""
        self._arrived = 0
        """Deliveries that arrived since `_start_waiting` last looked."""
        self._hold = max(1, prefetch // 4)
        """While arrivals keep coming, up to this many wait (a loop turn each) to share
        one ack frame."""

    @property
    def in_worker(self) -> int:
        """Deliveries waiting or running."""
        return len(self.waiting) + self.running

    def arrive(self, raw: DeliveredMessage) -> None:
        if self.stopping:
            self._spawn(self._give_back(raw.channel, delivery_tag(raw)))
            return
        self.waiting.append(raw)
        self._arrived += 1
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_waiting)

    def _start_waiting(self) -> None:
        """As many waiting deliveries as there are free runs: one ack, then their runs;
        the rest wait, unacked."""
        self._scheduled = False
        if self.stopping:
            self.give_back()
            return
        waiting = self.waiting
        free = self.prefetch - self.running
        arrived, self._arrived = self._arrived, 0
        if arrived and len(waiting) < min(self._hold, free):
            self._schedule()  # more are streaming in: they share the ack frame
            return
        group: list[DeliveredMessage] = []
        while waiting and len(group) < free:
            raw = waiting[0]
            if raw.channel.is_closed:  # the broker requeued it with its channel
                waiting.popleft()
                continue
            if group and raw.channel is not group[0].channel:
                break  # a new channel's: the next group
            group.append(waiting.popleft())
        if not group:
            return
        self.running += len(group)
        self._spawn(self._ack_then_run(group))
        if waiting and len(group) < free:
            self._schedule()

    async def _ack_then_run(self, group: list[DeliveredMessage]) -> None:
        """Ack the group (the frame is handed to the connection), then run each delivery:
        the first in this task, the others in a task each."""
        channel = group[0].channel
        last = delivery_tag(group[-1])
        try:
            await channel.basic_ack(last, multiple=True, wait=False)
        except CONNECTION_LOST as exc:
            # Not acked: the broker requeues them with the channel, so none runs here.
            self._late_ack(exc, last)
            self._ended(len(group))
            return
        except BaseException:
            self._ended(len(group))  # cancelled (shutdown) before the ack went out
            raise
        loop = asyncio.get_running_loop()
        for raw in group[1:]:
            task = loop.create_task(self._run(raw))
            self._tasks[task] = time.monotonic()
            task.add_done_callback(self._run_ended)
        try:
            await self._run(group[0])
        finally:
            self._ended(1)

    def _run_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._ended(1)

    def _ended(self, runs: int) -> None:
        self.running -= runs
        if self.waiting:
            self._schedule()

    async def _give_back(self, channel: Any, tag: int) -> None:
        """Requeue a delivery that never ran (it was not acked)."""
        if channel.is_closed:
            return
        try:
            await channel.basic_nack(tag, requeue=True, wait=False)
        except CONNECTION_LOST:
            self._log.warning("late nack dropped: channel closed", delivery_tag=tag)

    def give_back(self) -> None:
        """Stopping: no run starts any more; the waiting deliveries, and any that arrive
        from now on, go back to the queue."""
        self.stopping = True
        waiting, self.waiting = self.waiting, collections.deque()
        for raw in waiting:
            self._spawn(self._give_back(raw.channel, delivery_tag(raw)))

    def forget(self) -> None:
        """A new channel: the waiting deliveries were requeued with the old one."""
        self.waiting.clear()
        self.stopping = False
