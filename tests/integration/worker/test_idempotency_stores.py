"""The idempotency contract, run against each store: a real SQLite file and the local Redis."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path

import pytest
from redis.asyncio import Redis

from rabbitflow.worker.clock import Seconds
from rabbitflow.worker.idempotency import (
    Claim,
    IdempotencyStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
LEASE = 0.05
"""Seconds: short enough for expiry tests, long enough to outlive a local round trip."""

MakeStore = Callable[..., IdempotencyStore]


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    prefix = f"rf-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        await delete_prefixed(redis_client, prefix)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Build stores of one kind that share state (the same file, the same Redis prefix)."""
    made: list[SQLiteStore | RedisStore] = []
    memory = MemoryStore()
    client = Redis.from_url(REDIS_URL) if request.param == "redis" else None
    prefix = f"rf-test-{uuid.uuid4().hex[:12]}:"

    def make(retention: Seconds = "24h") -> IdempotencyStore:
        if request.param == "memory":
            return memory if retention == "24h" else MemoryStore(retention=retention)
        store: SQLiteStore | RedisStore
        if client is None:
            store = SQLiteStore(tmp_path / "idem.db", retention=retention)
        else:
            store = RedisStore(client, retention=retention, prefix=prefix)
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            await store.close()
        if client is not None:
            await delete_prefixed(client, prefix)
            await client.aclose()


async def test_claim_then_complete_makes_the_key_done(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.claim("m-1", 30) is Claim.NEW
    assert await store.claim("m-1", 30) is Claim.BUSY
    assert await store.complete("m-1") is True
    assert await store.claim("m-1", 30) is Claim.DONE
    assert await store.claim("m-2", 30) is Claim.NEW


async def test_release_after_a_failure_lets_the_retry_run(make_store: MakeStore) -> None:
    store = make_store()
    await store.claim("m", 30)
    await store.release("m")
    assert await store.claim("m", 30) is Claim.NEW


async def test_release_never_undoes_a_completion(make_store: MakeStore) -> None:
    store = make_store()
    await store.claim("m", 30)
    await store.complete("m")
    await store.release("m")
    assert await store.claim("m", 30) is Claim.DONE


async def test_a_dead_workers_lease_expires_and_can_be_claimed(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.claim("m", LEASE) is Claim.NEW
    await asyncio.sleep(LEASE * 2.5)
    assert await store.claim("m", 30) is Claim.NEW


async def test_completed_keys_expire_after_the_retention(make_store: MakeStore) -> None:
    store = make_store(retention="100ms")
    await store.claim("m", 30)
    await store.complete("m")
    assert await store.claim("m", 30) is Claim.DONE
    await asyncio.sleep(0.25)
    assert await store.claim("m", 30) is Claim.NEW


@pytest.mark.parametrize(
    "make_store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)], indirect=True
)
async def test_a_worker_cannot_release_another_workers_lease(make_store: MakeStore) -> None:
    """Two stores on one file or prefix are two workers (one MemoryStore is one worker)."""
    first, second = make_store(), make_store()
    assert await first.claim("m", LEASE) is Claim.NEW
    await asyncio.sleep(LEASE * 2.5)
    assert await second.claim("m", 30) is Claim.NEW
    await first.release("m")  # the first worker failed late: must not free the second's lease
    assert await first.claim("m", 30) is Claim.BUSY
    assert await first.complete("m") is False, "the first worker had lost its lease"
    assert await second.claim("m", 30) is Claim.DONE


@pytest.mark.redis
async def test_redis_keys_are_namespaced_and_expire(redis_client: Redis, redis_prefix: str) -> None:
    async with RedisStore(url=REDIS_URL, prefix=redis_prefix, retention=60) as store:
        await store.claim("order-7", 30)
        assert 0 < await redis_client.pttl(redis_prefix + "order-7") <= 30_000
        await store.complete("order-7")
        assert await redis_client.get(redis_prefix + "order-7") == b"done"
        assert 30_000 < await redis_client.pttl(redis_prefix + "order-7") <= 60_000


async def test_sqlite_store_uses_wal_and_purges_expired_rows(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "idem.db", retention="100ms") as store:
        await store.claim("a", 30)
        await store.complete("a")
        await store.claim("b", LEASE)
        await asyncio.sleep(0.25)
        assert await store.purge_expired() == 2
    with closing(sqlite3.connect(tmp_path / "idem.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
