"""Two worker processes racing on the same keys through one SQLite file or one Redis:
each key's handler succeeds exactly once, and a killed worker's lease expires."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from rabbitflow.worker.idempotency import Claim, RedisStore, SQLiteStore, acquire

REDIS_URL = "redis://127.0.0.1:6379/0"
KEYS = [str(n) for n in range(300)]
CTX = mp.get_context("spawn")  # no fork: the parent runs an event loop and threads


def _store(kind: str, location: str) -> SQLiteStore | RedisStore:
    if kind == "sqlite":
        return SQLiteStore(location)
    return RedisStore(url=REDIS_URL, prefix=location)


async def _work(kind: str, location: str, worker: int, start: Any, results: Any) -> list[str]:
    """Process every key once if nobody else did; worker 0 fails every tenth key once."""
    processed: list[str] = []
    failed: list[str] = []
    store = _store(kind, location)
    try:
        await store.claim("warm-up-" + str(worker), 1)  # connect before the start signal
        results.put(("ready", worker))
        start.wait()
        for key in KEYS:
            if await acquire(store, key, lease=30, poll_interval=0.002, max_wait=30):
                if worker == 0 and int(key) % 10 == 0:
                    failed.append(key)
                    await asyncio.sleep(0.003)
                    await store.release(key)
                    continue
                processed.append(key)
                await asyncio.sleep(0.001)  # the handler's work: the other worker sees BUSY
                await store.complete(key)
        for key in failed:  # the retries of the failures
            if await acquire(store, key, lease=30, poll_interval=0.002, max_wait=30):
                processed.append(key)
                await store.complete(key)
    finally:
        await store.close()
    return processed


def race_worker(kind: str, location: str, worker: int, start: Any, results: Any) -> None:
    results.put((worker, asyncio.run(_work(kind, location, worker, start, results))))


def hold_lease_and_hang(kind: str, location: str, claimed: Any) -> None:
    async def main() -> None:
        store = _store(kind, location)
        assert await store.claim("killed", 0.5) is Claim.NEW
        claimed.set()
        await asyncio.sleep(60)

    asyncio.run(main())


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(kind, location): an SQLite file path, or a Redis key prefix cleaned up afterwards."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "idem.db")
        return
    prefix = f"rf-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield "redis", prefix
    finally:
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(5)


@pytest.mark.slow
async def test_two_processes_racing_process_each_key_exactly_once(
    backend: tuple[str, str], processes: list[Any]
) -> None:
    kind, location = backend
    start, results = CTX.Event(), CTX.Queue()
    for worker in (0, 1):
        p = CTX.Process(target=race_worker, args=(kind, location, worker, start, results))
        p.start()
        processes.append(p)
    ready = await asyncio.to_thread(lambda: [results.get(timeout=60) for _ in "ab"])
    assert sorted(ready) == [("ready", 0), ("ready", 1)]
    start.set()  # both are connected: start them together
    outcome = dict(await asyncio.to_thread(lambda: [results.get(timeout=90) for _ in "ab"]))
    counts = Counter(outcome[0] + outcome[1])
    assert set(counts) == set(KEYS)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    assert outcome[0], "both workers won some keys: they really raced"
    assert outcome[1], "both workers won some keys: they really raced"


@pytest.mark.slow
async def test_a_killed_workers_lease_expires_then_another_worker_takes_over(
    backend: tuple[str, str], processes: list[Any]
) -> None:
    kind, location = backend
    claimed = CTX.Event()
    p = CTX.Process(target=hold_lease_and_hang, args=(kind, location, claimed))
    p.start()
    processes.append(p)
    assert await asyncio.to_thread(claimed.wait, 30)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    await asyncio.to_thread(p.join, 5)
    store = _store(kind, location)
    try:
        assert await store.claim("killed", 30) is Claim.BUSY
        assert await acquire(store, "killed", poll_interval=0.02, max_wait=5) is True
        assert await store.complete("killed") is True
    finally:
        await store.close()
