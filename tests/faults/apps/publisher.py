"""A publisher in a process of its own (the partition tier runs it in a namespace of its
own): `tests.faults.harness.publish_tracked` with every outcome journalled.

Usage: python -m tests.faults.apps.publisher URLS JOURNAL PUBLISH_TIMEOUT PACE

The journal gets one line per outcome, ``ID STATUS MONOTONIC_TIME`` (one write a line),
and at the end (after SIGTERM) one ``# {json}`` line: the longest publish and the errors.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import IO

from tests.faults.harness import PublishLog, publish_tracked


class Journal(dict[int, str]):
    """The status dict of a `PublishLog` that writes each outcome down as it is set."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out

    def __setitem__(self, key: int, value: str) -> None:
        super().__setitem__(key, value)
        self.out.write(f"{key} {value} {time.monotonic():.3f}\n")


async def main(urls: str, journal: str, publish_timeout: float, pace: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(journal, "a", buffering=1) as out:  # noqa: ASYNC230 (before any publish)
        log = PublishLog(status=Journal(out))
        await publish_tracked(
            urls,
            range(1, 10**7),
            log,
            window=20,
            pace=pace,
            stop=stop,
            publish_timeout=publish_timeout,
            connect_timeout=2.0,
        )
        out.write("# " + json.dumps({"longest": log.longest, "errors": dict(log.errors)}) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
