"""``rabbitflow migrate`` against the real broker, with publishers publishing throughout."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from ops_helpers import DATA, MANAGEMENT_URL, RABBITFLOW, Result

from rabbitflow import App, Message, Producer
from rabbitflow.amqp.migrate import MigrationError
from rabbitflow.amqp.publish import BulkResult, Outgoing

pytestmark = pytest.mark.broker

OLD = str(DATA / "migrate_old.yaml")
NEW = str(DATA / "migrate_new.yaml")


def _messages(prefix: str, count: int) -> list[Outgoing]:
    return [
        Outgoing("orders", "order.placed", {"n": i}, headers={"x-n": i}, message_id=f"{prefix}-{i}")
        for i in range(count)
    ]


async def _publish(url: str, prefix: str, count: int, window: int = 500) -> set[str]:
    async with Producer(url) as producer:
        result: BulkResult = await producer.publish_many(_messages(prefix, count), window=window)
    return {f"{prefix}-{i}" for i in result.confirmed}


async def _trickle(url: str, prefix: str, count: int, batches: int, pause: float) -> set[str]:
    """Publish ``count`` messages with confirms in ``batches`` over the migration."""
    confirmed: set[str] = set()
    per = count // batches
    async with Producer(url) as producer:
        for b in range(batches):
            batch = [
                Outgoing(
                    "orders",
                    "order.placed",
                    {"n": i},
                    headers={"x-n": i},
                    message_id=f"{prefix}-{i}",
                )
                for i in range(b * per, (b + 1) * per)
            ]
            result = await producer.publish_many(batch, window=200)
            confirmed |= {batch[i].message_id or "" for i in result.confirmed}
            await asyncio.sleep(pause)
    return confirmed


async def _drain(url: str, queue: str) -> tuple[list[str], dict[str, Any]]:
    """Every message id in ``queue`` (consumed without acks: the queue is thrown away)
    and one message's headers; ends when the queue stays empty for 3 s."""
    ids: list[str] = []
    headers: dict[str, Any] = {}
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        async with q.iterator(no_ack=True) as it:
            while True:
                try:
                    message = await asyncio.wait_for(it.__anext__(), 3.0)
                except TimeoutError:
                    break
                ids.append(message.message_id or "")
                headers = dict(message.headers or {})
    finally:
        await connection.close()
    return ids, headers


async def _migrate(url: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "RABBITFLOW_URL": url, "RABBITFLOW_MANAGEMENT_URL": MANAGEMENT_URL}
    return await asyncio.create_subprocess_exec(
        *RABBITFLOW,
        "migrate",
        NEW,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(proc: asyncio.subprocess.Process, timeout: float = 120) -> Result:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return Result(proc.returncode or 0, out.decode(), err.decode())


async def _state(url: str) -> str:
    """Where a killed migrate left the queues: ``work:<type>:<ready>`` and its temp queue."""
    import httpx

    vhost = url.rsplit("/", 1)[1]
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as api:
        answer = await api.get(f"{MANAGEMENT_URL}/api/queues/{vhost}")
    return (
        " ".join(
            f"{q['name']}:{q['arguments'].get('x-queue-type', 'classic')}"
            for q in answer.json()
            if q["name"].startswith("work")
        )
        or "no queue"
    )


async def _queue_type(url: str) -> Any:
    import httpx

    vhost = url.rsplit("/", 1)[1]
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as api:
        answer = await api.get(f"{MANAGEMENT_URL}/api/queues/{vhost}/work")
    return answer.json()["arguments"]


@pytest.mark.timeout(400)
async def test_classic_to_quorum_with_a_new_max_length_loses_nothing_while_publishing(
    cli: Callable[..., Result],
    declare: Callable[[str], Awaitable[Any]],
    amqp_url: str,
) -> None:
    await declare(OLD)
    before = await _publish(amqp_url, "pre", 20_000)
    assert len(before) == 20_000
    assert cli("plan", NEW).code == 2

    proc = await _migrate(amqp_url, "--yes")
    during = await _trickle(amqp_url, "live", 5_000, batches=25, pause=0.05)
    result = await _finish(proc)
    assert result.code == 0, result.out + result.err
    assert "migrate queue 'work'" in result.out
    assert "1. declare work.migrate" in result.out
    assert len(during) == 5_000

    arguments = await _queue_type(amqp_url)
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-max-length"] == 60000
    plan = cli("plan", NEW)
    assert plan.code == 0, plan.out
    ids, headers = await _drain(amqp_url, "work")
    assert before | during <= set(ids), "a confirmed message was lost"
    assert "x-n" in headers  # headers travel with the message
    sys.stdout.write(f"{len(ids)} messages, {len(ids) - len(set(ids))} duplicates\n")


async def _counts(url: str) -> dict[str, int]:
    """Ready messages of ``work`` and ``work.migrate`` (AMQP: exact and immediate); a
    missing queue is left out."""
    out: dict[str, int] = {}
    connection = await aio_pika.connect(url)
    try:
        for name in ("work", "work.migrate"):
            channel = await connection.channel()
            try:
                q = await channel.declare_queue(name, passive=True)
                out[name] = q.declaration_result.message_count or 0
            except aio_pika.exceptions.ChannelNotFoundEntity:
                pass
    finally:
        await connection.close()
    return out


async def _kill_when(
    url: str, proc: asyncio.subprocess.Process, ready: Callable[[dict[str, int], str], bool]
) -> str:
    """kill -9 the migrate once ``ready(counts, queue types)`` holds (or it ended)."""
    for _ in range(1200):
        if proc.returncode is not None:
            return "finished before"
        counts, state = await _counts(url), await _state(url)
        if ready(counts, state):
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            return f"{state} {counts}"
        await asyncio.sleep(0.05)
    raise AssertionError("migrate never reached the kill point")


# Five kill points spread over the steps; each run resumes from where the last one died.
KILL_POINTS: list[tuple[str, Callable[[dict[str, int], str], bool]]] = [
    ("temp queue declared", lambda c, s: "work.migrate" in c),
    ("moving out", lambda c, s: c.get("work.migrate", 0) > 1000 and "work:classic" in s),
    ("old queue deleted", lambda c, s: "work:classic" not in s),
    ("moving back", lambda c, s: "work:quorum" in s and c.get("work", 0) > 500),
    ("moved back, temp not yet deleted", lambda c, s: c.get("work.migrate", 1) == 0),
]


@pytest.mark.timeout(400)
async def test_kill_9_at_five_points_then_rerun_loses_nothing(
    cli: Callable[..., Result],
    declare: Callable[[str], Awaitable[Any]],
    amqp_url: str,
) -> None:
    await declare(OLD)
    before = await _publish(amqp_url, "pre", 6_000)
    publisher = asyncio.create_task(_trickle(amqp_url, "live", 1_500, batches=30, pause=0.3))
    rng = random.Random()
    kills: list[str] = []
    for label, ready in KILL_POINTS:
        proc = await _migrate(amqp_url, "--yes")
        await asyncio.sleep(rng.uniform(0, 0.3))
        kills.append(f"{label}: {await _kill_when(amqp_url, proc, ready)}")
        await _finish(proc)
    result = await _finish(await _migrate(amqp_url, "--yes"))
    assert result.code == 0, f"kills {kills}: " + result.out + result.err
    during = await publisher
    assert cli("plan", NEW).code == 0
    ids, _ = await _drain(amqp_url, "work")
    missing = (before | during) - set(ids)
    assert not missing, f"kills {kills}: {len(missing)} lost, e.g. {sorted(missing)[:3]}"
    dup = len(ids) - len(set(ids))
    sys.stdout.write(f"kills {kills}; {len(ids)} messages, {dup} duplicates\n")


async def test_a_worker_does_not_start_on_a_queue_being_migrated(
    declare: Callable[[str], Awaitable[Any]], amqp_url: str
) -> None:
    await declare(OLD)
    await _publish(amqp_url, "pre", 100)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        # What a migrate killed after its first step leaves.
        await channel.declare_exchange("rabbitflow.migrating", "fanout", durable=True)
        await channel.declare_queue(
            "work.migrate", durable=True, arguments={"x-rabbitflow-migrating": "work"}
        )
    finally:
        await connection.close()
    app = App(topology=NEW, url=amqp_url)

    @app.handler("work")
    async def handle(body: dict[str, Any]) -> None: ...

    with pytest.raises(MigrationError, match="'work' is being migrated"):
        await app.start()
    await app.stop()


async def test_an_old_worker_is_refused_or_waited_for(
    declare: Callable[[str], Awaitable[Any]], amqp_url: str, cli: Callable[..., Result]
) -> None:
    await declare(OLD)
    before = await _publish(amqp_url, "pre", 200)
    gate = asyncio.Event()
    handled: set[str] = set()
    app = App(topology=OLD, url=amqp_url)

    @app.handler("work", prefetch=1)
    async def handle(body: dict[str, Any], message: Message) -> None:
        await gate.wait()  # holds one message unacked, as a busy worker does
        handled.add(message.message_id or "")

    await app.start()
    try:
        refused = await _finish(await _migrate(amqp_url, "--yes"))
        assert refused.code == 1
        assert len(refused.err.strip().splitlines()) == 1
        assert "a rabbitflow worker of the old definition" in refused.err

        waiting = await _migrate(amqp_url, "--yes", "--wait")
        assert waiting.stdout is not None
        seen = ""
        while "waiting for the consumers of work to go" not in seen:
            line = await asyncio.wait_for(waiting.stdout.readline(), 60)
            assert line, "migrate --wait ended without waiting"
            seen += line.decode()
        assert "a rabbitflow worker of the old definition" in seen or "consumer" in seen
        await asyncio.sleep(0.5)
        assert waiting.returncode is None  # still waiting for the worker
    finally:
        gate.set()
        await app.stop(timeout=5)
    result = await _finish(waiting)
    assert result.code == 0, result.out + result.err
    assert "migrated work" in result.out
    assert cli("plan", NEW).code == 0
    ids, _ = await _drain(amqp_url, "work")
    # The worker acked what it handled; the rest is all in the new queue.
    assert before <= set(ids) | handled
