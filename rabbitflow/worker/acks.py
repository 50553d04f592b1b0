"""Acking many deliveries with one frame.

A per-message ``basic.ack`` costs a frame and a socket write each, which dominates a fast
consumer. `Acker` acks the longest run of *finished* deliveries (in delivery order) with
one ``basic.ack(multiple=True)``, flushed once per event-loop turn. An ack never covers a
delivery that is still running: at-least-once is kept, only the frames are fewer.

A fast consumer finishes only a few deliveries per loop turn, so with ``hold=N`` the
frame waits until N finished deliveries are unacked, or ``max_hold`` seconds at most:
each ack frame is a socket write (a system call and the loopback's TCP work), the
largest single cost per message after decoding. The consumer holds at most a quarter of
its prefetch, so the broker's window never closes on finished work.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import aiormq


class Acker:
    """Coalesces acks on one channel.

    Call `delivered` for each delivery as it arrives (in order), then exactly one of
    `ack` (it succeeded) or `settled` (it was nacked or otherwise settled on its own).
    """

    __slots__ = (
        "_done",
        "_held",
        "_last",
        "_on_error",
        "_outstanding",
        "_scheduled",
        "_timer",
        "channel",
        "hold",
        "immediate",
        "max_hold",
    )

    def __init__(
        self,
        channel: Any,
        on_error: Callable[[BaseException], None],
        *,
        immediate: bool = False,
        hold: int = 1,
        max_hold: float = 0.002,
    ) -> None:
        self.channel = channel
        self.immediate = immediate
        """Ack a lone delivery at once instead of coalescing (prefetch 1: the broker
        sends nothing more until it has the ack, so there is nothing to coalesce)."""
        self._outstanding: collections.deque[int] = collections.deque()
        self._done: dict[int, bool] = {}
        """Finished tags → whether they still need an ack."""
        self._scheduled = False
        self._on_error = on_error
        self.hold = max(1, hold)
        """Finished deliveries to gather before an ack frame is sent."""
        self.max_hold = max_hold
        """Seconds a finished delivery's ack may wait for others (then it is sent)."""
        self._last = 0
        """The highest finished tag not acked yet (0: none)."""
        self._held = 0
        """Finished deliveries covered by ``_last`` (acked or nacked ones)."""
        self._timer: asyncio.TimerHandle | None = None

    def delivered(self, tag: int) -> None:
        self._outstanding.append(tag)

    def ack(self, tag: int) -> bool:
        """Record a success. True when the caller should ack ``tag`` itself, now (in
        `immediate` mode, when it is the only delivery outstanding)."""
        outstanding = self._outstanding
        if self.immediate and len(outstanding) == 1 and outstanding[0] == tag and not self._done:
            outstanding.popleft()
            return True
        self._done[tag] = True
        self._schedule()
        return False

    def pending(self, tag: int) -> bool:
        """Whether ``tag`` was delivered and neither `ack` nor `settled` was called for it."""
        return tag not in self._done and tag in self._outstanding

    def settled(self, tag: int) -> None:
        self._done[tag] = False
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _collect(self) -> None:
        """Move the finished prefix of the outstanding deliveries into the held ack."""
        outstanding, done = self._outstanding, self._done
        while outstanding and outstanding[0] in done:
            tag = outstanding.popleft()
            self._held += 1
            if done.pop(tag):
                self._last = tag

    def _turn(self) -> None:
        # Once per loop turn with something finished: send when enough is held, else
        # make sure the held ack goes out within max_hold.
        self._scheduled = False
        self._collect()
        if not self._last:
            self._held = 0
        elif self._held >= self.hold:
            self._send()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_hold, self._send)

    def flush(self) -> None:
        """Ack the finished prefix of the outstanding deliveries now."""
        self._scheduled = False
        self._collect()
        self._send()

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        last, self._last, self._held = self._last, 0, 0
        if not last:
            return
        channel = self.channel
        if channel.is_closed:
            # The broker requeued them with the channel: redelivery, not loss.
            self._on_error(aiormq.exceptions.ChannelInvalidStateError("channel closed"))
            return
        # multiple=True covers every unacked tag up to `last` on this channel; the ones in
        # the prefix that were nacked are settled already and unaffected.
        task = asyncio.ensure_future(channel.basic_ack(last, multiple=True, wait=False))
        task.add_done_callback(self._check)

    def _check(self, task: asyncio.Future[Any]) -> None:
        exc = task.exception()
        if exc is not None and isinstance(
            exc, aiormq.exceptions.AMQPError | RuntimeError | ConnectionError
        ):
            self._on_error(exc)
