"""The loop watchdog names the function that blocks the event loop."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from structlog.testing import capture_logs

from rabbitflow.worker.watchdog import LoopWatchdog, blocking_function


def handler_that_blocks() -> None:
    time.sleep(0.01)


def test_blocking_function_names_the_registered_handler() -> None:
    seen = {}

    def inner() -> None:
        seen["frame"] = sys._getframe()

    def my_handler() -> None:
        inner()

    my_handler()
    assert blocking_function(seen["frame"], {my_handler.__code__: "my_handler"}) == "my_handler"


def test_blocking_function_falls_back_to_the_innermost_frame() -> None:
    frame = sys._getframe()
    assert blocking_function(frame, {}).startswith(
        "test_blocking_function_falls_back_to_the_innermost_frame ("
    )


async def test_watchdog_warns_once_per_stall_naming_the_handler() -> None:
    async def slow_handler() -> None:
        time.sleep(0.6)  # noqa: ASYNC251 - blocks the loop on purpose

    dog = LoopWatchdog({slow_handler.__code__: "slow_handler"}, threshold=0.3, interval=0.05)
    with capture_logs() as logs:
        dog.start()
        await asyncio.sleep(0.1)
        await slow_handler()
        await asyncio.sleep(0.2)
        await dog.stop()
    blocked = [e for e in logs if e["event"].startswith("event loop blocked")]
    assert len(blocked) == 1
    assert blocked[0]["handler"] == "slow_handler"
    assert blocked[0]["log_level"] == "warning"
    assert threading.active_count() >= 1
