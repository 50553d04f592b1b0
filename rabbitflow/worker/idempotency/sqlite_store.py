"""An idempotency store in one SQLite file, shared by the worker processes of one host.

Claims are atomic across processes: each runs in a ``BEGIN IMMEDIATE`` transaction, which
takes SQLite's write lock before reading, so two processes cannot both see a key as free.
The database runs in WAL mode (readers do not block the writer). Every call runs on one
dedicated thread, off the event loop, with its own connection.

Times are wall-clock (`time.time`) because they are compared across processes.
Not for network file systems: SQLite's locking is unreliable there; use `RedisStore`.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from rabbitflow.worker.clock import Clock, Seconds, to_seconds
from rabbitflow.worker.idempotency.base import DEFAULT_PREFIX, DEFAULT_RETENTION, Claim

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rabbitflow_idempotency (
    key TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID
"""
_PURGE_EVERY = 1000
"""Claims between deletions of expired rows."""


class SQLiteStore:
    """Keys and leases in a table of the SQLite file at ``path`` (created if missing).

    Args:
        path: the database file; every process of the host gives the same path.
        retention: how long a completed key is remembered (seconds or ``"24h"``).
        prefix: namespace in front of every key.
        busy_timeout: seconds a call waits for another process's write lock.
        clock: wall-clock seconds shared by the processes; tests may inject one.

    Use it as an async context manager, or call `close()` when done.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention: Seconds = DEFAULT_RETENTION,
        prefix: str = DEFAULT_PREFIX,
        busy_timeout: float = 10.0,
        clock: Clock = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention = to_seconds(retention, "idempotency retention")
        self.prefix = prefix
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._owner = uuid.uuid4().hex
        # One thread owns the connection: sqlite3 connections must stay on their thread.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rabbitflow-sqlite")
        self._db: sqlite3.Connection | None = None
        self._claims = 0

    async def __aenter__(self) -> SQLiteStore:
        await self._run(self._connect)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection and stop the store's thread."""
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def claim(self, key: str, lease_seconds: float) -> Claim:
        """Take the lease on ``key`` unless it is done or leased; see `Claim`."""
        return await self._run(self._claim, self.prefix + key, lease_seconds)

    async def complete(self, key: str) -> bool:
        """Remember ``key`` as done; True when our lease was still live."""
        return await self._run(self._complete, self.prefix + key)

    async def release(self, key: str) -> None:
        """Drop our lease on ``key``; a completed key stays completed."""
        await self._run(self._release, self.prefix + key)

    async def purge_expired(self) -> int:
        """Delete expired keys and leases now; returns how many rows went."""
        return await self._run(self._purge)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # Everything below runs on the store's thread.

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = open_wal(self.path, self._busy_timeout)
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _claim(self, k: str, lease_seconds: float) -> Claim:
        db, now = self._connect(), self._clock()
        self._claims += 1
        if self._claims % _PURGE_EVERY == 0:
            self._purge()
        with _immediate(db):
            row = db.execute(
                "SELECT done FROM rabbitflow_idempotency WHERE key = ? AND expires_at > ?",
                (k, now),
            ).fetchone()
            if row is not None:
                return Claim.DONE if row[0] else Claim.BUSY
            db.execute(
                "INSERT OR REPLACE INTO rabbitflow_idempotency VALUES (?, 0, ?, ?)",
                (k, self._owner, now + lease_seconds),
            )
            return Claim.NEW

    def _complete(self, k: str) -> bool:
        db, now = self._connect(), self._clock()
        with _immediate(db):
            held = db.execute(
                "SELECT 1 FROM rabbitflow_idempotency "
                "WHERE key = ? AND done = 0 AND owner = ? AND expires_at > ?",
                (k, self._owner, now),
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO rabbitflow_idempotency VALUES (?, 1, ?, ?)",
                (k, self._owner, now + self.retention),
            )
            return held is not None

    def _release(self, k: str) -> None:
        self._connect().execute(
            "DELETE FROM rabbitflow_idempotency WHERE key = ? AND done = 0 AND owner = ?",
            (k, self._owner),
        )

    def _purge(self) -> int:
        cursor = self._connect().execute(
            "DELETE FROM rabbitflow_idempotency WHERE expires_at <= ?", (self._clock(),)
        )
        return cursor.rowcount


def open_wal(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode, in autocommit (callers issue ``BEGIN IMMEDIATE``); shared
    with the stream offset store."""
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    # Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    # locked" at once, without its busy handler, to the second of two processes doing it
    # together (two workers of `run --processes 2` starting on a new store: 1 in 4 pairs
    # measured). So the switch is retried here, within the same bound.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(random.uniform(0.002, 0.02))
    # NORMAL is durable across process crashes in WAL mode; only a power loss can
    # drop the last commits (then a message may be processed twice, never lost).
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


__all__ = ["SQLiteStore"]
