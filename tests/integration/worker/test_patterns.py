"""Delivery guarantees and resilience through the real worker: idempotent handlers,
partitioned ordering, single-active-consumer failover and the circuit breaker."""

from __future__ import annotations

import asyncio
import collections
import uuid
from pathlib import Path
from typing import Any

import pytest

from rabbitflow import App, CircuitBreaker, MemoryStore, Message, RedisStore, SQLiteStore
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from rabbitflow.topology import load_text
from tests.helpers import message_count, wait_for
from tests.integration.worker.procs import started_consuming

pytestmark = pytest.mark.broker

SIMPLE = """
version: 1
queues:
  payments:
    retry: {max_retries: 3, delay: 50ms}
"""


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "idem.db")
        yield s
        await s.close()
    else:
        s = RedisStore(url="redis://127.0.0.1:6379/0", prefix=f"rf-test-{uuid.uuid4().hex}:")
        yield s
        await s.close()


async def test_same_message_twice_runs_the_handler_once(amqp_url: str, store: Any) -> None:
    app = App(load_text(SIMPLE), url=amqp_url)
    runs: list[str] = []

    @app.handler("payments", idempotency=store)
    async def charge(body: dict[str, Any], message: Message) -> None:
        runs.append(str(message.message_id))

    async with app:
        for _ in range(2):
            await app.publish("", "payments", {"amount": 5}, message_id="pay-1")
        await app.publish("", "payments", {"amount": 6}, message_id="pay-2")
        await wait_for(lambda: sorted(runs) == ["pay-1", "pay-2"], timeout=5)
        await asyncio.sleep(0.3)
    assert sorted(runs) == ["pay-1", "pay-2"]


async def test_a_failed_run_releases_the_key_for_its_retry(amqp_url: str) -> None:
    app = App(load_text(SIMPLE), url=amqp_url)
    attempts: list[int] = []

    @app.handler("payments", idempotency=MemoryStore())
    async def charge(body: dict[str, Any], message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise ConnectionError("gateway down")

    async with app:
        await app.publish("", "payments", {"amount": 5}, message_id="pay-3")
        await wait_for(lambda: attempts == [1, 2], timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_two_processes_racing_process_each_message_once(
    worker: Any, amqp_url: str, vhost: str, tmp_path: Path, kind: str
) -> None:
    """Each message is published twice; two worker processes share the queue."""
    idem = f"sqlite:{tmp_path / 'shared.db'}" if kind == "sqlite" else "redis://127.0.0.1:6379/0"
    w = worker(
        IDEMPOTENCY=idem,
        IDEMPOTENCY_PREFIX=f"rf-{uuid.uuid4().hex}:",
        HANDLER_PREFETCH="10",
        HANDLER_SLEEP="0.01",
    )
    w.start("--processes", "2")
    await started_consuming(vhost, consumers=2)
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            Outgoing("", "jobs", {"id": i}, message_id=f"m-{i}")
            for i in range(200)
            for _ in range(2)
        )
    assert result.ok
    await wait_for(lambda: len(w.done()) == 200, timeout=90, interval=0.1)
    await asyncio.sleep(0.5)
    assert w.stop() == 0
    done = w.done()
    assert set(done) == {str(i) for i in range(200)}
    assert max(done.values()) == 1  # handled once each, though delivered twice
    # Both processes consume (started_consuming above); which one handles a key is the
    # scheduler's choice: one may claim every key while the other only finds duplicates.
    # test_idempotency_race.py makes the two contend by construction.


PARTITIONED = """
version: 1
exchanges:
  events: {type: direct}
queues:
  accounts:
    partitions: {count: 4, key: routing_key}
    bind: [{exchange: events, routing_keys: [{keys}]}]
"""


@pytest.mark.slow
async def test_partitions_keep_order_per_key_across_two_processes(
    worker: Any, amqp_url: str, vhost: str
) -> None:
    keys = [f"acct-{k}" for k in range(100)]
    topology = PARTITIONED.replace("{keys}", ", ".join(keys))
    w = worker(topology, QUEUE="accounts")
    w.start("--processes", "2")
    for p in range(4):
        await started_consuming(vhost, consumers=2, queue=f"accounts.p{p}")
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            (
                Outgoing("events", keys[i % 100], {"id": i, "key": keys[i % 100], "seq": i})
                for i in range(10_000)
            ),
            window=1000,
        )
    assert result.ok
    await wait_for(lambda: len(w.done()) == 10_000, timeout=240, interval=0.5)
    assert w.stop() == 0
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for parts in w.lines():
        if parts[4] == "done":
            per_key[parts[5]].append(int(parts[6]))
    assert len(per_key) == 100
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"{key} out of order"


SAC = """
version: 1
queues:
  jobs:
    type: quorum
    single_active_consumer: true
"""


@pytest.mark.slow
async def test_single_active_consumer_fails_over_in_order(
    worker: Any, amqp_url: str, vhost: str
) -> None:
    first = worker(SAC, HANDLER_SLEEP="0.005")
    first.start()
    await started_consuming(vhost, consumers=1)
    standby = worker(SAC, HANDLER_SLEEP="0.005")
    standby.start()
    # a single-active-consumer queue counts only its active consumer
    await wait_for(lambda: "consumer started" in standby.output(), timeout=20, interval=0.1)
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            Outgoing("", "jobs", {"id": i, "seq": i}) for i in range(600)
        )
    assert result.ok
    await wait_for(lambda: len(first.done()) >= 100, timeout=20)
    assert not standby.lines()  # the standby waits while the first is active
    assert first.process is not None
    first.process.kill()
    first.process.wait()
    await wait_for(lambda: len(first.done() | standby.done()) == 600, timeout=30, interval=0.1)
    assert standby.stop() == 0
    handled = [int(p[6]) for p in first.lines() + standby.lines() if p[4] == "start"]
    order = list(dict.fromkeys(handled))  # first time each was started
    assert order == sorted(order)
    # after the failover the standby starts with the message in flight at the kill
    taken_over = [int(p[6]) for p in standby.lines() if p[4] == "start"]
    assert taken_over == sorted(taken_over)


async def test_circuit_breaker_opens_half_opens_and_closes(amqp_url: str, channel: Any) -> None:
    app = App(load_text(SIMPLE), url=amqp_url)
    # reset_after leaves room for a loaded machine to notice "open" and check that nothing
    # is consumed before the half-open trial.
    breaker = CircuitBreaker(failures=3, reset_after="2s")
    downstream_up = False
    calls: list[int] = []
    states: list[str] = []  # the breaker's state as each call starts

    @app.handler("payments", prefetch=1, circuit_breaker=breaker)
    async def charge(body: dict[str, Any], message: Message) -> None:
        calls.append(body["n"])
        states.append(breaker.state.value)
        if not downstream_up:
            raise ConnectionError("downstream down")

    async with app:
        for n in range(20):
            await app.publish("", "payments", {"n": n})
        await wait_for(lambda: breaker.state.value == "open", timeout=5)
        calls_when_open = len(calls)
        depth_when_open = await message_count(channel, "payments")
        await asyncio.sleep(0.25)  # open: nothing is consumed, the queue depth stays
        assert len(calls) == calls_when_open
        assert await message_count(channel, "payments") >= depth_when_open
        downstream_up = True
        # after reset_after one message goes through (half-open), succeeds, closes it
        await wait_for(lambda: breaker.state.value == "closed", timeout=5)
        await wait_for(lambda: _count_is(channel, "payments", 0), timeout=10)
    # Three calls while closed opened it; every later call came through half-open or after
    # it closed again (a slow observer may see a failed trial, not the count it opened at).
    assert states[:3] == ["closed"] * 3
    assert states[3] == "half_open"


async def _count_is(channel: Any, queue: str, n: int) -> bool:
    return await message_count(channel, queue) == n
