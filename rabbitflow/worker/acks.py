"""Acking many deliveries with one frame.

A per-message ``basic.ack`` costs a frame and a socket write each, which dominates a fast
consumer. `Acker` acks the longest run of *finished* deliveries (in delivery order) with
one ``basic.ack(multiple=True)``, flushed once per event-loop turn. An ack never covers a
delivery that is still running: at-least-once is kept, only the frames are fewer.
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

    __slots__ = ("_done", "_on_error", "_outstanding", "_scheduled", "channel", "immediate")

    def __init__(
        self, channel: Any, on_error: Callable[[BaseException], None], *, immediate: bool = False
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
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Ack the finished prefix of the outstanding deliveries now."""
        self._scheduled = False
        outstanding, done = self._outstanding, self._done
        last = 0
        while outstanding and outstanding[0] in done:
            tag = outstanding.popleft()
            if done.pop(tag):
                last = tag
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
