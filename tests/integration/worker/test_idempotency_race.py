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


async def _work(
    kind: str, location: str, worker: int, start: Any, won: list[Any], results: Any
) -> tuple[list[str], int]:
    """Process every key once if nobody else did; worker 0 fails every tenth key once.

    Returns the keys this worker processed and how often the store told it that the
    other worker held or had finished a key (contention seen from the store's answers).

    The race is made certain rather than hoped for: a worker holds the lease of the
    first key it wins until the other worker has won one too. The other worker meets
    that held key (the store answers BUSY), defers it and wins the next one, so both
    take part and contend whatever the scheduler does. The first pass only claims (a
    BUSY key is deferred, as a broker would redeliver it later); the second pass waits
    for the deferred keys and retries the failures.
    """
    processed: list[str] = []
    failed: list[str] = []
    deferred: list[str] = []
    contention = 0
    store = _store(kind, location)
    try:
        await store.claim("warm-up-" + str(worker), 1)  # connect before the start signal
        results.put(("ready", worker))
        start.wait()
        for key in KEYS:
            claim = await store.claim(key, 30)
            if claim is not Claim.NEW:
                contention += 1
                if claim is Claim.BUSY:
                    deferred.append(key)
                continue
            if not won[worker].is_set():
                won[worker].set()
                peer_won = await asyncio.to_thread(won[1 - worker].wait, 30)
                assert peer_won, "the other worker never won a key"
            await _handle(store, key, worker, processed, failed)
        for key in deferred:
            if await acquire(store, key, lease=30, poll_interval=0.002, max_wait=30):
                await _handle(store, key, worker, processed, failed)
        for key in failed:  # the retries of the failures
            if await acquire(store, key, lease=30, poll_interval=0.002, max_wait=30):
                processed.append(key)
                await store.complete(key)
    finally:
        await store.close()
    return processed, contention


async def _handle(
    store: SQLiteStore | RedisStore, key: str, worker: int, processed: list[str], failed: list[str]
) -> None:
    """The handler of a claimed key: worker 0 fails every tenth key once (released)."""
    if worker == 0 and int(key) % 10 == 0 and key not in failed:
        failed.append(key)
        await asyncio.sleep(0.003)
        await store.release(key)
        return
    processed.append(key)
    await asyncio.sleep(0.001)  # the handler's work: the other worker sees BUSY
    await store.complete(key)


def race_worker(
    kind: str, location: str, worker: int, start: Any, won: list[Any], results: Any
) -> None:
    results.put((worker, asyncio.run(_work(kind, location, worker, start, won, results))))


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
    start, results, won = CTX.Event(), CTX.Queue(), [CTX.Event(), CTX.Event()]
    for worker in (0, 1):
        p = CTX.Process(target=race_worker, args=(kind, location, worker, start, won, results))
        p.start()
        processes.append(p)
    ready = await asyncio.to_thread(lambda: [results.get(timeout=60) for _ in "ab"])
    assert sorted(ready) == [("ready", 0), ("ready", 1)]
    start.set()  # both are connected: start them together
    outcome = dict(await asyncio.to_thread(lambda: [results.get(timeout=90) for _ in "ab"]))
    (processed_0, contention_0), (processed_1, contention_1) = outcome[0], outcome[1]
    counts = Counter(processed_0 + processed_1)
    assert set(counts) == set(KEYS)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    assert processed_0, "both workers won some keys: they really raced"
    assert processed_1, "both workers won some keys: they really raced"
    assert contention_0 + contention_1 > 0, "the store answered BUSY or DONE: they contended"


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
