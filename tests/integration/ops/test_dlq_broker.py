"""``rabbitflow dlq``: list, replay and purge against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from ops_helpers import DATA, MANAGEMENT_URL, RABBITFLOW, Result

pytestmark = pytest.mark.broker

FAILED_AT = "2026-11-29T08:00:00+00:00"


async def rabbitflow_dead_letters(
    channel: AbstractChannel,
    queue: str,
    ids: list[str],
    dlx: str | None = None,
    routing_key: str | None = None,
    error: str = "ValueError: boom",
) -> None:
    """Publish dead letters the way the worker does: to Q.dlx, with the §2 headers."""
    exchange = await channel.get_exchange(dlx or f"{queue}.dlx")
    for i, message_id in enumerate(ids):
        headers: dict[str, Any] = {
            "x-rabbitflow-attempt": 3,
            "x-rabbitflow-queue": queue,
            "x-rabbitflow-error": error,
            "x-rabbitflow-failed-at": FAILED_AT,
            "x-rabbitflow-original-exchange": "orders",
            "x-rabbitflow-original-routing-key": "order.placed",
            "x-rabbitflow-traceback": "Traceback ...",
            "tenant": f"t{i % 2}",
        }
        await exchange.publish(
            aio_pika.Message(
                json.dumps({"n": i}).encode(),
                headers=headers,
                message_id=message_id,
                content_type="application/json",
                correlation_id=f"c-{message_id}",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key or queue,
            mandatory=True,
        )


async def broker_dead_letters(
    channel: AbstractChannel, queue: str, routing_key: str, ids: list[str]
) -> None:
    """Publish to the orders exchange and reject from ``queue`` without requeue: the broker
    dead-letters them itself, with ``x-death``."""
    orders = await channel.get_exchange("orders")
    for message_id in ids:
        await orders.publish(
            aio_pika.Message(b"raw", message_id=message_id), routing_key=routing_key
        )
    work = await channel.get_queue(queue)
    for _ in ids:
        message = await work.get(timeout=5)
        await message.reject(requeue=False)


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def drain(channel: AbstractChannel, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    q = await channel.get_queue(queue)
    out = []
    while (message := await q.get(fail=False, timeout=5)) is not None:
        await message.ack()
        out.append(message)
    return out


async def wait_depth(channel: AbstractChannel, queue: str, expected: int) -> None:
    """The broker moves dead letters asynchronously: wait (bounded) for the count."""
    for _ in range(200):
        if await depth(channel, queue) == expected:
            return
        await asyncio.sleep(0.01)
    assert await depth(channel, queue) == expected


def ids_of(result: Result) -> list[str]:
    assert result.code == 0, result.err
    return [json.loads(line)["message_id"] for line in result.out.splitlines()]


@pytest.fixture
async def dead(declare: Callable[[str], Awaitable[Any]], channel: AbstractChannel) -> list[str]:
    """work.dlq holds 6 rabbitflow dead letters then 3 the broker dead-lettered."""
    await declare("dlq.yaml")
    ours = [f"rf-{i}" for i in range(6)]
    theirs = [f"broker-{i}" for i in range(3)]
    await rabbitflow_dead_letters(channel, "work", ours)
    await broker_dead_letters(channel, "work", "order.placed", theirs)
    await wait_depth(channel, "work.dlq", 9)
    await drain(channel, "audit.copy")  # it saw the 3 published to orders
    return ours + theirs


async def test_list_shows_every_dead_letter_and_leaves_count_and_order(
    cli: Callable[..., Result], channel: AbstractChannel, dead: list[str]
) -> None:
    first = cli("dlq", "list", "work", "--json")
    assert ids_of(first) == dead
    rows = [json.loads(line) for line in first.out.splitlines()]
    assert rows[0]["error"] == "ValueError: boom"
    assert rows[0]["attempt"] == 3
    assert rows[0]["failed_at"] == FAILED_AT
    assert (rows[0]["exchange"], rows[0]["routing_key"]) == ("orders", "order.placed")
    assert rows[-1]["error"] == "dead-lettered by the broker: rejected"
    assert rows[-1]["queue"] == "work"
    assert (rows[-1]["exchange"], rows[-1]["routing_key"]) == ("orders", "order.placed")
    assert ids_of(cli("dlq", "list", "work", "--json")) == dead
    assert await depth(channel, "work.dlq") == len(dead)
    assert [m.message_id for m in await drain(channel, "work.dlq")] == dead


async def test_list_limit_and_table(cli: Callable[..., Result], dead: list[str]) -> None:
    assert ids_of(cli("dlq", "list", "work", "--json", "--limit", "2")) == dead[:2]
    table = cli("dlq", "list", "work", env={"COLUMNS": "250"})
    assert table.code == 0, table.err
    assert "rf-0" in table.out
    assert "ValueError: boom" in table.out


async def test_list_keeps_order_of_a_quorum_dlq(
    cli: Callable[..., Result], channel: AbstractChannel, declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    ids = [f"q-{i}" for i in range(20)]
    await rabbitflow_dead_letters(channel, "work.quorum", ids)
    for _ in range(2):
        assert ids_of(cli("dlq", "list", "work.quorum", "--json", "--limit", "7")) == ids[:7]
        assert ids_of(cli("dlq", "list", "work.quorum", "--json")) == ids
    assert [m.message_id for m in await drain(channel, "work.quorum.dlq")] == ids


async def test_replay_returns_messages_to_their_queue_only(
    cli: Callable[..., Result], channel: AbstractChannel, dead: list[str]
) -> None:
    result = cli("dlq", "replay", "work")
    assert result.code == 0, result.err
    assert "moved 9 dead letters" in result.out
    assert await depth(channel, "work.dlq") == 0
    assert await depth(channel, "audit.copy") == 0  # other subscribers see nothing again
    replayed = await drain(channel, "work")
    assert [m.message_id for m in replayed] == dead
    first, broker_one = replayed[0], replayed[-1]
    assert "x-rabbitflow-attempt" not in first.headers
    assert "x-rabbitflow-replayed-at" in first.headers
    assert first.headers["x-rabbitflow-error"] == "ValueError: boom"
    assert first.headers["tenant"] == "t0"
    assert first.body == b'{"n": 0}'
    assert (first.correlation_id, first.content_type) == ("c-rf-0", "application/json")
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert not any(k == "x-death" or k.startswith("x-first-death") for k in broker_one.headers)
    assert broker_one.headers["x-rabbitflow-original-routing-key"] == "order.placed"


async def test_replay_where_moves_only_matching_and_keeps_the_rest_in_order(
    cli: Callable[..., Result], channel: AbstractChannel, dead: list[str]
) -> None:
    result = cli("dlq", "replay", "work", "--where", "tenant=t1")
    assert result.code == 0, result.err
    assert "moved 3 dead letters" in result.out
    assert [m.message_id for m in await drain(channel, "work")] == ["rf-1", "rf-3", "rf-5"]
    left = ["rf-0", "rf-2", "rf-4", *dead[6:]]
    assert ids_of(cli("dlq", "list", "work", "--json")) == left
    limited = cli("dlq", "replay", "work", "--limit", "2", "--where", "x-rabbitflow-error=Value*")
    assert "moved 2 dead letters" in limited.out
    assert ids_of(cli("dlq", "list", "work", "--json")) == ["rf-4", *dead[6:]]


async def test_replay_from_a_shared_dlq_moves_only_the_queues_own(
    cli: Callable[..., Result], channel: AbstractChannel, declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    await rabbitflow_dead_letters(
        channel, "billing", ["b-0", "b-1"], dlx="shared.dlx", routing_key="failed"
    )
    await rabbitflow_dead_letters(
        channel, "shipping", ["s-0"], dlx="shared.dlx", routing_key="failed"
    )
    topology = str(DATA / "dlq.yaml")
    assert ids_of(cli("dlq", "list", "billing", "--json", "--topology", topology)) == ["b-0", "b-1"]
    moved = cli("dlq", "replay", "billing", "--topology", topology)
    assert "moved 2 dead letters from failed.all" in moved.out, moved.err
    assert [m.message_id for m in await drain(channel, "billing")] == ["b-0", "b-1"]
    assert await depth(channel, "failed.all") == 1
    purged = cli("dlq", "purge", "shipping", "--yes", "--topology", topology)
    assert "purged 1 dead letter " in purged.out, purged.err
    assert await depth(channel, "failed.all") == 0


async def test_interrupted_replay_loses_nothing(
    amqp_url: str, channel: AbstractChannel, declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    total = 5000
    ids = [f"m-{i}" for i in range(total)]
    # Without confirms, to fill the DLQ fast; the count below proves they all arrived.
    connection = await aio_pika.connect(amqp_url)
    try:
        fast = await connection.channel(publisher_confirms=False)
        exchange = await fast.get_exchange("work.dlx")
        for m in ids:
            await exchange.publish(
                aio_pika.Message(b"x", message_id=m, headers={"x-rabbitflow-queue": "work"}),
                routing_key="work",
            )
    finally:
        await connection.close()
    await wait_depth(channel, "work.dlq", total)
    env = {**os.environ, "RABBITFLOW_URL": amqp_url, "RABBITFLOW_MANAGEMENT_URL": MANAGEMENT_URL}
    process = await asyncio.create_subprocess_exec(
        *RABBITFLOW,
        "dlq",
        "replay",
        "work",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(6000):  # at most about 30 s
            if await depth(channel, "work") >= 200:
                break
            await asyncio.sleep(0.005)
        process.kill()
    finally:
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == -signal.SIGKILL, "replay ended before it was killed"
    await asyncio.sleep(0.2)  # the broker requeues what the dead connection held
    moved = {m.message_id for m in await drain(channel, "work")}
    left = {m.message_id for m in await drain(channel, "work.dlq")}
    assert 0 < len(moved) < total
    assert moved | left == set(ids)


async def test_purge_refuses_without_yes_then_drops(
    cli: Callable[..., Result], channel: AbstractChannel, dead: list[str]
) -> None:
    refused = cli("dlq", "purge", "work")
    assert refused.code == 1
    assert refused.err.strip() == "error: refusing to purge work.dlq without --yes"
    assert await depth(channel, "work.dlq") == len(dead)
    done = cli("dlq", "purge", "work", "--yes")
    assert done.code == 0, done.err
    assert "purged 9 dead letters" in done.out
    assert await depth(channel, "work.dlq") == 0


async def test_missing_dlq_is_one_line_and_exit_1(cli: Callable[..., Result]) -> None:
    result = cli("dlq", "list", "nothing")
    assert result.code == 1
    assert result.err.startswith("error: queue 'nothing.dlq' does not exist")
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_replay_to_a_deleted_queue_keeps_the_messages_and_exits_1(
    cli: Callable[..., Result], channel: AbstractChannel, dead: list[str]
) -> None:
    await channel.queue_delete("work")
    result = cli("dlq", "replay", "work")
    assert result.code == 1
    assert "moved 0 dead letters" in result.out
    assert "unroutable" in result.err
    assert result.err.strip().splitlines()[-1] == (
        "error: 9 dead letters could not be moved and stay in work.dlq"
    )
    assert ids_of(cli("dlq", "list", "work", "--json")) == dead


async def test_list_of_an_empty_dlq(
    cli: Callable[..., Result], declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    result = cli("dlq", "list", "work")
    assert result.code == 0, result.err
    assert result.out.strip() == "no dead letters of work in work.dlq"
