"""A watchdog that notices a blocked event loop and names the handler blocking it.

An ``async def`` handler that calls ``time.sleep`` or another blocking function freezes
the whole worker: no other delivery runs, acks wait, and heartbeats stop, so the broker
eventually drops the connection. The watchdog is a thread: a task on the loop stamps the
time every ``interval``; when the stamp is older than ``threshold`` the thread reads the
loop thread's current stack (``sys._current_frames``) and logs which function holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Mapping
from types import CodeType, FrameType

import structlog

log = structlog.get_logger("rabbitflow.worker")

DEFAULT_THRESHOLD = 1.0
"""Seconds without a loop tick before the watchdog warns."""


def blocking_function(frame: FrameType | None, handlers: Mapping[CodeType, str]) -> str:
    """Name what a stack is running: the outermost registered handler on it, else the
    innermost function with its file and line."""
    innermost = frame
    while frame is not None:
        name = handlers.get(frame.f_code)
        if name is not None:
            return name
        frame = frame.f_back
    if innermost is None:
        return "unknown"
    code = innermost.f_code
    return f"{code.co_qualname} ({code.co_filename}:{innermost.f_lineno})"


class LoopWatchdog:
    """Warns, from a thread of its own, when the event loop has not ticked for a while."""

    def __init__(
        self,
        handlers: Mapping[CodeType, str],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        interval: float = 0.1,
    ) -> None:
        self.handlers = dict(handlers)
        self.threshold = threshold
        self.interval = interval
        self.warnings = 0
        self._stamp = time.monotonic()
        self._loop_thread = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking on the running loop and watching from a daemon thread."""
        self._loop_thread = threading.get_ident()
        self._stamp = time.monotonic()
        self._ticker = asyncio.get_running_loop().create_task(
            self._tick(), name="rabbitflow-watchdog"
        )
        self._thread = threading.Thread(target=self._watch, name="rabbitflow-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread and the ticking task."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._thread is not None:
            self._thread.join(timeout=1)

    async def _tick(self) -> None:
        while True:
            self._stamp = time.monotonic()
            await asyncio.sleep(self.interval)

    def _watch(self) -> None:
        warned_for = None
        while not self._stop.wait(self.interval):
            stamp = self._stamp
            stalled = time.monotonic() - stamp
            if stalled < self.threshold or warned_for == stamp:
                continue
            warned_for = stamp  # one warning per stall
            frame = sys._current_frames().get(self._loop_thread)
            self.warnings += 1
            log.warning(
                "event loop blocked: a handler is running blocking code in async "
                "def (use a plain def handler, or await an async API)",
                handler=blocking_function(frame, self.handlers),
                blocked_s=round(stalled, 2),
            )
