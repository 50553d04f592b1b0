"""Dead letters for the page: read once into a compact snapshot, then paged from it.

Reading a DLQ without consuming it means holding every message unacknowledged until the
walk ends (`rabbitflow.dlq.scan`: a quorum queue would otherwise move what it gets back
behind the rest). A page of 50 out of 10,000 costs the same walk as the whole queue, so
the dashboard walks once, keeps a small summary of each dead letter (the error, a body
preview of `PREVIEW` bytes, the headers; tracebacks kept once per distinct text) and
serves every page, filter and traceback from that snapshot. The broker holds the
messages only for the length of one walk (about a second for 10,000 here), not while
someone reads pages. A snapshot is read again when the DLQ's depth changes, when it is
older than `MAX_AGE`, and after every replay or purge. Replay and purge never act on the
snapshot: they walk the live queue and move what matches at that moment.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rabbitflow import dlq as dead_letters
from rabbitflow.dlq_headers import matches

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

    from rabbitflow.topology.dead_letters import DeadLetterQueue

R = TypeVar("R")


class OnBroker(Protocol):
    """Runs work with an open broker connection (`rabbitflow.amqp.session.on_broker`)."""

    def __call__(self, work: Callable[[AbstractConnection], Awaitable[R]], /) -> Awaitable[R]:
        """The work's result."""
        ...


PREVIEW = 1024
"""Bytes of each body kept in a snapshot."""
MAX_AGE = 30.0
"""Seconds after which a snapshot is read again even if the DLQ's depth did not change."""
TRACEBACK = "x-rabbitflow-traceback"
SETTLE_POLLS = 40
"""Depth reads (50 ms apart) while a walk's messages are counted back in."""


@dataclass(frozen=True)
class Filter:
    """Which dead letters a page shows and "replay all matching" moves."""

    error: str = ""
    """Text the error must contain (case-insensitive)."""
    header: tuple[str, str] | None = None
    """(header, pattern): the header must match (``*`` ``?`` wildcards)."""

    @classmethod
    def parse(cls, error: str | None, header: str | None) -> Filter:
        """From the page's fields; ``header`` is ``NAME=PATTERN``.

        Raises:
            ValueError: for a header filter without ``=``.
        """
        pair = None
        if header and header.strip():
            name, sep, pattern = header.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"header filter {header!r}: expected NAME=PATTERN")
            pair = (name.strip(), pattern)
        return cls((error or "").strip(), pair)

    def accepts(self, summary: Mapping[str, Any]) -> bool:
        """Whether a dead letter (a `describe` summary) passes."""
        if self.error and self.error.lower() not in (summary.get("error") or "").lower():
            return False
        return self.header is None or matches(summary.get("headers") or {}, [self.header])

    def __bool__(self) -> bool:
        return bool(self.error) or self.header is not None


@dataclass
class Snapshot:
    """One walk of a DLQ."""

    letters: list[dict[str, Any]]
    tracebacks: list[str]
    depth: int
    """Messages the DLQ held (for a shared DLQ, other queues' too)."""
    taken_at: float
    seconds: float
    """How long the walk held the messages."""
    by_key: dict[str, int] = field(default_factory=dict)


def letter_key(message_id: str | None, summary: Mapping[str, Any], body: bytes) -> str:
    """How the page names one dead letter: its message id, or a digest of its body, error
    and failure time when it has none. Copies with the same id are named alike and move
    together."""
    if message_id:
        return message_id
    digest = hashlib.sha256(body)
    digest.update(f"\0{summary.get('error')}\0{summary.get('failed_at')}".encode())
    return "sha256:" + digest.hexdigest()[:20]


async def _settled_depth(connection: AbstractConnection, queue: str, walked: int) -> int:
    """The DLQ's depth once the messages a walk gave back are counted again.

    A queue counts a ``basic.nack`` of many messages back in over a moment: a depth read
    at once would look like a change (and cost another walk), and a walk started at once
    would expect, and show, too few.
    """
    depth = await dead_letters.queue_depth(connection, queue)
    for _ in range(SETTLE_POLLS):
        if depth >= walked:
            break
        await asyncio.sleep(0.05)
        depth = await dead_letters.queue_depth(connection, queue)
    return depth


class DeadLetterBook:
    """Snapshots of the DLQs the dashboard shows, one walk at a time per DLQ."""

    def __init__(self, on_broker: OnBroker, max_age: float = MAX_AGE) -> None:
        self._on_broker = on_broker
        self.max_age = max_age
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.walks = 0
        """How many times a DLQ was read (tests check that pages reuse a snapshot)."""

    async def page(
        self, dlq: DeadLetterQueue, offset: int, limit: int, flt: Filter
    ) -> dict[str, Any]:
        """One page of the dead letters that pass ``flt``, in queue order."""
        snap = await self._fresh(dlq)
        chosen = [s for s in snap.letters if flt.accepts(s)] if flt else snap.letters
        rows = [
            {k: v for k, v in s.items() if k != "traceback"} | {"has_traceback": "traceback" in s}
            for s in chosen[offset : offset + limit]
        ]
        return {
            "queue": dlq.work_queue,
            "dead_letter_queue": dlq.name,
            "shared": dlq.shared,
            "total": len(snap.letters),
            "matching": len(chosen),
            "offset": offset,
            "limit": limit,
            "rows": rows,
            "read_seconds": round(snap.seconds, 3),
            "read_age": round(time.monotonic() - snap.taken_at, 1),
        }

    async def traceback(self, dlq: DeadLetterQueue, key: str) -> str | None:
        """The traceback of dead letter ``key`` (None: none, or no such dead letter)."""
        snap = await self._fresh(dlq)
        index = snap.by_key.get(key)
        if index is None:
            return None
        tb = snap.letters[index].get("traceback")
        return snap.tracebacks[tb] if isinstance(tb, int) else None

    async def replay(
        self,
        dlq: DeadLetterQueue,
        *,
        keys: frozenset[str] | None,
        flt: Filter,
        publish_timeout: float,
    ) -> dead_letters.ReplayResult:
        """Move back the dead letters named by ``keys`` (all when None) that pass ``flt``."""

        def accept(message: AbstractIncomingMessage) -> bool:
            summary = dead_letters.describe_message(message, 0)
            if (
                keys is not None
                and letter_key(message.message_id, summary, message.body) not in keys
            ):
                return False
            return flt.accepts(summary)

        async with self._lock(dlq):
            self._snapshots.pop(dlq.name, None)
            before = await self._on_broker(lambda c: dead_letters.queue_depth(c, dlq.name))
            result = await self._on_broker(
                lambda c: dead_letters.replay(
                    c, dlq, accept=accept, publish_timeout=publish_timeout
                )
            )
            # The next walk must see what this one gave back, or it would miss messages.
            back = before - result.moved
            await self._on_broker(lambda c: _settled_depth(c, dlq.name, back))
            return result

    async def purge(self, dlq: DeadLetterQueue) -> int:
        """Drop every dead letter of ``dlq``; how many."""
        async with self._lock(dlq):
            self._snapshots.pop(dlq.name, None)
            before = await self._on_broker(lambda c: dead_letters.queue_depth(c, dlq.name))
            count = int(await self._on_broker(lambda c: dead_letters.purge(c, dlq)))
            await self._on_broker(lambda c: _settled_depth(c, dlq.name, before - count))
            return count

    def forget(self) -> None:
        """Drop every snapshot."""
        self._snapshots.clear()

    def _lock(self, dlq: DeadLetterQueue) -> asyncio.Lock:
        # Two walks of one queue at once would each see only what the other does not hold.
        return self._locks.setdefault(dlq.name, asyncio.Lock())

    async def _fresh(self, dlq: DeadLetterQueue) -> Snapshot:
        async with self._lock(dlq):
            snap = self._snapshots.get(dlq.name)
            if snap is not None and time.monotonic() - snap.taken_at < self.max_age:
                depth = await self._on_broker(lambda c: dead_letters.queue_depth(c, dlq.name))
                if depth == snap.depth:
                    return snap
            snap = await self._on_broker(lambda c: self._walk(c, dlq))
            snap.depth = await self._on_broker(lambda c: _settled_depth(c, dlq.name, snap.depth))
            self._snapshots[dlq.name] = snap
            return snap

    async def _walk(self, connection: AbstractConnection, dlq: DeadLetterQueue) -> Snapshot:
        letters: list[dict[str, Any]] = []
        tracebacks: dict[str, int] = {}

        def keep(message: AbstractIncomingMessage, position: int) -> None:
            summary = dead_letters.describe_message(message, position)
            summary["key"] = letter_key(message.message_id, summary, message.body)
            summary["body"] = summary["body"][:PREVIEW]
            headers = summary["headers"]
            tb = headers.pop(TRACEBACK, None)
            if isinstance(tb, str):
                summary["traceback"] = tracebacks.setdefault(tb, len(tracebacks))
            letters.append(summary)

        started = time.monotonic()
        self.walks += 1
        depth = await dead_letters.scan(connection, dlq, keep)
        seconds = time.monotonic() - started
        by_key: dict[str, int] = {}
        for i, s in enumerate(letters):
            by_key.setdefault(s["key"], i)
        return Snapshot(letters, list(tracebacks), depth, time.monotonic(), seconds, by_key)
