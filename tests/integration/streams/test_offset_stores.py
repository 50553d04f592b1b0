"""The stream offset stores on real SQLite and Redis: positions survive the store (a
restart), are kept per consumer name and stream, and two stores on one SQLite file (two
processes of a host) see each other's positions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from rabbitflow import RedisOffsets, SQLiteOffsets
from rabbitflow.errors import ConfigError
from rabbitflow.streams.offsets import OffsetStore, offsets_from

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"rf-test-offsets-{uuid.uuid4().hex[:8]}:"
    yield name
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{name}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def make(kind: str, tmp_path: Path, prefix: str) -> OffsetStore:
    if kind == "sqlite":
        return SQLiteOffsets(tmp_path / "offsets.db")
    return RedisOffsets(REDIS_URL, prefix=prefix)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_positions_survive_a_new_store(kind: str, tmp_path: Path, prefix: str) -> None:
    first = make(kind, tmp_path, prefix)
    assert isinstance(first, OffsetStore)
    try:
        assert await first.load("order-status-v1", "orders.events") is None
        await first.store("order-status-v1", "orders.events", 41)
        await first.store("order-status-v1", "orders.events", 99)
        await first.store("audit", "orders.events", 7)
        await first.store("order-status-v1", "payments.events", 3)
    finally:
        await first.close()

    again = make(kind, tmp_path, prefix)  # a restart: a new store on the same data
    try:
        assert await again.load("order-status-v1", "orders.events") == 99
        assert await again.load("order-status-v1", "payments.events") == 3
        assert await again.positions("orders.events") == {"order-status-v1": 99, "audit": 7}
        assert await again.positions("nothing") == {}
        with pytest.raises(ValueError, match="int >= 0"):
            await again.store("audit", "orders.events", -3)
    finally:
        await again.close()


async def test_two_sqlite_stores_share_one_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteOffsets(path) as a, SQLiteOffsets(path) as b:
        await a.store("x", "s", 5)
        assert await b.load("x", "s") == 5
        await b.store("x", "s", 6)
        assert await a.load("x", "s") == 6
    import sqlite3

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_unusable_sqlite_path_is_one_clear_error(tmp_path: Path) -> None:
    store = SQLiteOffsets(tmp_path / "missing-dir" / "offsets.db")
    try:
        with pytest.raises(ConfigError, match="offset store"):
            await store.load("x", "s")
    finally:
        await store.close()


@pytest.mark.redis
async def test_store_specs_build_working_stores(tmp_path: Path, prefix: str) -> None:
    sqlite_store = offsets_from(f"sqlite:{tmp_path / 'o.db'}")
    redis_store = offsets_from(REDIS_URL)
    assert isinstance(sqlite_store, SQLiteOffsets) and isinstance(redis_store, RedisOffsets)
    redis_store.prefix = prefix
    for store in (sqlite_store, redis_store):
        try:
            await store.store("n", "s", 1)
            assert await store.load("n", "s") == 1
        finally:
            await store.close()
