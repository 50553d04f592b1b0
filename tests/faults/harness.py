"""The fault-injection harness: a publisher that records every outcome, the ledger the
handlers keep, and the checker that compares the two (lost / duplicated / unexpected).

Every message body is ``{"id": N}`` with N unique in the scenario. The publisher records
each publish as ``confirmed``, ``failed`` (the broker refused it or it was never sent) or
``unknown`` (no answer in time, or the connection died before the confirm: the broker may
have it). Handlers append ``ID ATTEMPT REDELIVERED PID start|done`` to a ledger file before
they return (``tests/integration/worker/apps/ledger.py``); a whole line reaches the kernel
with one ``write``, so it survives a ``kill -9`` of the worker.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from rabbitflow.errors import (
    BrokerUnavailable,
    PublishError,
    PublishNacked,
    PublishTimeout,
    Unroutable,
)
from rabbitflow.producer import Producer
from rabbitflow.settings import Settings

REPORT = Path(os.environ.get("RABBITFLOW_FAULTS_REPORT", "/tmp/rabbitflow-faults-report.jsonl"))


@dataclass
class PublishLog:
    """What the publisher knows about each id."""

    status: dict[int, str] = field(default_factory=dict)
    """id -> confirmed | failed | unknown"""
    longest: float = 0.0
    """The longest any single publish call took (seconds): the "never hangs" figure."""
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    last_confirmed: float = 0.0
    """When (monotonic) the latest confirm arrived: shows the publisher recovered."""

    def ids(self, status: str) -> set[int]:
        return {i for i, s in self.status.items() if s == status}


async def publish_tracked(
    url: str,
    ids: Iterable[int],
    log: PublishLog,
    *,
    queue: str = "jobs",
    window: int = 200,
    publish_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    pace: float = 0.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Publish ``{"id": N}`` for each id to ``queue``, ``window`` at a time, recording each
    outcome in ``log``. ``pace`` seconds between messages; ``stop`` ends it early."""
    settings = Settings(
        url=url, publish_timeout=publish_timeout, connect_timeout=connect_timeout, heartbeat=2
    )
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def one(producer: Producer, n: int) -> None:
        began = time.monotonic()
        try:
            await producer.publish("", queue, {"id": n}, message_id=str(n))
            log.status[n] = "confirmed"
            log.last_confirmed = time.monotonic()
        except (PublishTimeout, BrokerUnavailable) as exc:
            # A timeout may have reached the broker; "cannot connect" never did.
            log.status[n] = "unknown" if isinstance(exc, PublishTimeout) else "failed"
            log.errors[type(exc).__name__] += 1
        except (PublishNacked, Unroutable) as exc:
            # Nacked or returned: the broker did not enqueue it.
            log.status[n] = "failed"
            log.errors[type(exc).__name__] += 1
        except PublishError as exc:  # connection lost before the confirm
            log.status[n] = "unknown"
            log.errors[type(exc).__name__] += 1
        finally:
            log.longest = max(log.longest, time.monotonic() - began)
            slots.release()

    async with Producer(settings=settings, name="faults-publisher") as producer:
        for n in ids:
            if stop is not None and stop.is_set():
                break
            await slots.acquire()
            task = asyncio.create_task(one(producer, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if pace:
                await asyncio.sleep(pace)
        if tasks:
            await asyncio.gather(*tasks)


def read_ledger(path: Path) -> tuple[collections.Counter[int], list[tuple[int, int, int]]]:
    """Handled ids (``done`` lines) with their counts, and every (id, attempt,
    redelivered) that was handled."""
    done: collections.Counter[int] = collections.Counter()
    rows: list[tuple[int, int, int]] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[4] == "done":
            done[int(parts[0])] += 1
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return done, rows


async def dead_letter_ids(url: str, queue: str = "jobs.dlq") -> set[int]:
    """Ids sitting in a dead-letter queue (read and requeued, so the queue is unchanged
    until the vhost goes)."""
    connection = await aio_pika.connect(url)
    ids: set[int] = set()
    try:
        channel = await connection.channel()
        try:
            q = await channel.declare_queue(queue, passive=True)
        except Exception:
            return ids
        while True:
            m = await q.get(fail=False, no_ack=True)
            if m is None:
                break
            ids.add(int(json.loads(m.body)["id"]))
    finally:
        await connection.close()
    return ids


@dataclass
class Verdict:
    """The checker's counts for one scenario."""

    scenario: str
    published: int
    confirmed: int
    failed: int
    unknown: int
    handled: int
    lost: int
    duplicated: int
    unexpected: int
    dead_lettered: int
    redelivered: int
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> None:
        """Append to the report file (the source of docs/guarantees.md's table)."""
        with REPORT.open("a") as f:
            f.write(json.dumps({**asdict(self), "at": time.time()}) + "\n")
        print(f"\n[faults] {self.line()}")

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"{self.scenario}: published={self.published} confirmed={self.confirmed} "
            f"failed={self.failed} unknown={self.unknown} handled={self.handled} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"unexpected={self.unexpected} dlq={self.dead_lettered} {extra}"
        )


def check(
    scenario: str, log: PublishLog, ledger: Path, dead: set[int] | None = None, **extra: Any
) -> Verdict:
    """Count lost (confirmed, neither handled nor dead-lettered), duplicated (handled more
    than once) and unexpected (handled, never published) messages."""
    done, rows = read_ledger(ledger)
    dead = dead or set()
    confirmed = log.ids("confirmed")
    return Verdict(
        scenario=scenario,
        published=len(log.status),
        confirmed=len(confirmed),
        failed=len(log.ids("failed")),
        unknown=len(log.ids("unknown")),
        handled=len(done),
        lost=len(confirmed - set(done) - dead),
        duplicated=sum(n - 1 for n in done.values()),
        unexpected=len(set(done) - set(log.status)),
        dead_lettered=len(dead),
        redelivered=sum(1 for _, _, r in rows if r),
        extra=extra,
    )


async def until(
    condition: Any, timeout: float, interval: float = 0.1, message: str = "condition"
) -> float:
    """Poll ``condition`` (sync or async) until true; return the seconds it took."""
    began = time.monotonic()
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
