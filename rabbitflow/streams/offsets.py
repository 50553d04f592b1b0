"""Where each stream consumer stopped: offset stores (DESIGN.md §9) and the tracker that
keeps a stored position from passing an event still running.

A position is the offset of the last event a consumer *settled* (handled, or handed to
its dead-letter queue); a restart resumes at the next offset. Stores share their plumbing
with the idempotency stores: SQLite on a thread of its own in WAL mode, Redis through the
``redis`` extra.
"""

from __future__ import annotations

import asyncio
import heapq
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from rabbitflow.errors import ConfigError
from rabbitflow.worker.idempotency.redis_store import redis_from_url
from rabbitflow.worker.idempotency.sqlite_store import open_wal

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")

DEFAULT_PREFIX = "rabbitflow:offsets:"
"""Namespace of the Redis keys (one hash per stream: consumer name -> offset)."""


@runtime_checkable
class OffsetStore(Protocol):
    """Stored positions by (consumer name, stream)."""

    async def load(self, consumer_name: str, stream: str) -> int | None:
        """The last settled offset stored for the consumer, None when there is none."""

    async def store(self, consumer_name: str, stream: str, offset: int) -> None:
        """Record ``offset`` as the consumer's last settled event."""

    async def positions(self, stream: str) -> dict[str, int]:
        """Every stored position on ``stream``, by consumer name (for ``status``)."""

    async def close(self) -> None:
        """Release connections and threads."""


class MemoryOffsets:
    """Positions in a dict: for tests and single-process runs that may start over."""

    def __init__(self) -> None:
        self._positions: dict[tuple[str, str], int] = {}

    async def load(self, consumer_name: str, stream: str) -> int | None:
        return self._positions.get((consumer_name, stream))

    async def store(self, consumer_name: str, stream: str, offset: int) -> None:
        _check(offset)
        self._positions[(consumer_name, stream)] = offset

    async def positions(self, stream: str) -> dict[str, int]:
        return {name: o for (name, s), o in self._positions.items() if s == stream}

    async def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rabbitflow_offsets (
    consumer_name TEXT NOT NULL,
    stream TEXT NOT NULL,
    stream_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer_name, stream)
) WITHOUT ROWID
"""


class SQLiteOffsets:
    """Positions in a table of the SQLite file at ``path`` (created if missing), shared by
    the processes of one host. Calls run on one thread of the store's, off the event loop;
    the file is in WAL mode. Not for network file systems (use `RedisOffsets`)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rabbitflow-offsets")
        self._db: sqlite3.Connection | None = None

    async def __aenter__(self) -> SQLiteOffsets:
        await self._run(self._connect)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def load(self, consumer_name: str, stream: str) -> int | None:
        return await self._run(self._load, consumer_name, stream)

    async def store(self, consumer_name: str, stream: str, offset: int) -> None:
        _check(offset)
        await self._run(self._store, consumer_name, stream, offset)

    async def positions(self, stream: str) -> dict[str, int]:
        return await self._run(self._positions, stream)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise ConfigError(f"offset store {self.path}: {exc}") from None

    # Everything below runs on the store's thread.

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = open_wal(self.path, self._busy_timeout)
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _load(self, consumer_name: str, stream: str) -> int | None:
        row = (
            self._connect()
            .execute(
                "SELECT stream_offset FROM rabbitflow_offsets "
                "WHERE consumer_name = ? AND stream = ?",
                (consumer_name, stream),
            )
            .fetchone()
        )
        return None if row is None else int(row[0])

    def _store(self, consumer_name: str, stream: str, offset: int) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO rabbitflow_offsets VALUES (?, ?, ?)",
            (consumer_name, stream, offset),
        )

    def _positions(self, stream: str) -> dict[str, int]:
        rows = (
            self._connect()
            .execute(
                "SELECT consumer_name, stream_offset FROM rabbitflow_offsets WHERE stream = ?",
                (stream,),
            )
            .fetchall()
        )
        return {str(name): int(offset) for name, offset in rows}


class RedisOffsets:
    """Positions in Redis, one hash per stream (``<prefix><stream>``: name -> offset),
    shared by workers on many hosts (the ``redis`` extra).

    Args:
        url: a Redis URL (``redis://127.0.0.1:6379/0``); or give ``client``.
        client: a `redis.asyncio.Redis` client, closed by its owner.
        prefix: namespace in front of every key.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigError("RedisOffsets needs either a redis url or client=, not both")
        self._owns_client = client is None
        self.client: Redis = (
            client if client is not None else redis_from_url(str(url), "RedisOffsets")
        )
        self.prefix = prefix

    async def __aenter__(self) -> RedisOffsets:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def load(self, consumer_name: str, stream: str) -> int | None:
        value = await self.client.hget(self.prefix + stream, consumer_name)
        return None if value is None else int(value)

    async def store(self, consumer_name: str, stream: str, offset: int) -> None:
        _check(offset)
        await self.client.hset(self.prefix + stream, consumer_name, str(offset))

    async def positions(self, stream: str) -> dict[str, int]:
        stored = await self.client.hgetall(self.prefix + stream)
        return {_text(k): int(v) for k, v in stored.items()}

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def offsets_from(spec: str) -> OffsetStore:
    """An offset store from ``sqlite:PATH``, ``redis://...`` / ``rediss://...`` or
    ``memory`` (e.g. ``status --offsets``).

    Raises:
        ConfigError: for anything else.
    """
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisOffsets(spec)
    if spec.startswith("sqlite:"):
        path = spec.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ConfigError("--offsets sqlite:PATH needs a path")
        return SQLiteOffsets(path)
    if spec == "memory":
        return MemoryOffsets()
    raise ConfigError(f"invalid offset store {spec!r}: use sqlite:PATH or redis://HOST:PORT/DB")


class SettledOffsets:
    """The position a stream consumer may store: the highest settled offset below which
    every started event has settled, so the stored position never passes an event still
    running (a crash then re-delivers at most the events in flight).

    Offsets may settle in any order (concurrent handlers); each is started before it
    settles. Starting an offset at or below the committable position is refused: that
    position would already have passed it.
    """

    def __init__(self, position: int | None = None) -> None:
        self._position = position
        self._running: set[int] = set()
        self._running_heap: list[int] = []
        self._settled: list[int] = []

    @property
    def position(self) -> int | None:
        """The committable offset now (None before anything settled)."""
        floor = self._lowest_running()
        while self._settled and (floor is None or self._settled[0] < floor):
            self._position = heapq.heappop(self._settled)
        return self._position

    @property
    def running(self) -> int:
        """Events started and not yet settled."""
        return len(self._running)

    def start(self, offset: int) -> None:
        """An event begins.

        Raises:
            ValueError: for an offset already running or at/below the position.
        """
        if offset in self._running:
            raise ValueError(f"offset {offset} is already running")
        if self._position is not None and offset <= self._position:
            raise ValueError(f"offset {offset} starts at or below the position {self._position}")
        self._running.add(offset)
        heapq.heappush(self._running_heap, offset)

    def settle(self, offset: int) -> int | None:
        """An event is done (handled or dead-lettered); returns the new `position`.

        Raises:
            ValueError: for an offset that is not running.
        """
        if offset not in self._running:
            raise ValueError(f"offset {offset} settles but is not running")
        self._running.discard(offset)
        heapq.heappush(self._settled, offset)
        return self.position

    def _lowest_running(self) -> int | None:
        heap = self._running_heap
        while heap and heap[0] not in self._running:
            heapq.heappop(heap)
        return heap[0] if heap else None


def resume_from(stored: int | None) -> int | None:
    """The offset to attach at after a stored position (the next one); None without one."""
    return None if stored is None else stored + 1


def _check(offset: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"a stream offset is an int >= 0, not {offset!r}")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "MemoryOffsets",
    "OffsetStore",
    "RedisOffsets",
    "SQLiteOffsets",
    "SettledOffsets",
    "offsets_from",
    "resume_from",
]
