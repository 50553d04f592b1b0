"""`rabbitflow replay` against the real broker: a `type: stream` queue declared through
the topology, its events re-published with confirms by --from (offset, time, duration),
--until, --where, --limit and --routing-key, the stream unchanged afterwards, and a
replay killed with SIGKILL and run again publishing every event at least once."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from rabbitflow.streams.replay import last_offset, read
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand
from tests.helpers import drain, message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """\
version: 1
exchanges:
  orders: {type: topic}
  backfill: {type: topic}
queues:
  orders.events:
    type: stream
    max_age: 7d
    bind: [{exchange: orders, routing_key: "order.#"}]
  backfill.all:
    bind: [{exchange: backfill, routing_key: "#"}]
"""


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractConnection]:
    conn = await connect(amqp_url)
    await declare(conn, expand(load_text(TOPOLOGY)))
    try:
        yield conn
    finally:
        await conn.close()


async def rabbitflow(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def publish_events(amqp_url: str, start: int, count: int) -> None:
    kinds = ("order.placed", "order.paid")
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            Outgoing(
                "orders",
                kinds[i % 2],
                {"order_id": i},
                headers={"n": i, "kind": kinds[i % 2]},
                message_id=f"event-{i}",
                correlation_id=f"c-{i}",
            )
            for i in range(start, start + count)
        )
    assert result.ok and len(result.confirmed) == count


async def stored(connection: AbstractConnection) -> list[tuple[int, str | None]]:
    """(offset, message_id) of every event the stream holds."""
    return [
        (e.offset, e.properties.message_id)
        async for e in read(connection, "orders.events", "first", idle=0.5)
    ]


def ns(messages: list[Any]) -> list[int]:
    return [int(m.headers["n"]) for m in messages]


async def test_replay_from_first_keeps_everything_and_leaves_the_stream(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    await publish_events(amqp_url, 0, 50)
    before = await stored(connection)
    assert len(before) == 50

    result = await rabbitflow("replay", "orders.events", "--to", "backfill", "--url", amqp_url)

    assert result.returncode == 0, result.stderr
    assert "50 confirmed, 0 returned, 0 nacked" in result.stdout
    copies = await drain(channel, "backfill.all")
    assert ns(copies) == list(range(50))
    first = copies[7]
    assert (first.routing_key, first.message_id, first.correlation_id) == (
        "order.paid",
        "event-7",
        "c-7",
    )
    assert first.content_type == "application/json" and first.body == b'{"order_id":7}'
    assert first.headers["kind"] == "order.paid"
    assert first.headers["x-rabbitflow-replayed-from"] == f"orders.events@{before[7][0]}"
    assert "x-stream-offset" not in first.headers
    assert first.delivery_mode == 2 and first.timestamp is not None
    assert await stored(connection) == before  # the stream is unchanged


async def test_from_an_offset_until_an_offset(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    await publish_events(amqp_url, 0, 30)
    offsets = [o for o, _ in await stored(connection)]

    result = await rabbitflow(
        "replay", "orders.events", "--to", "backfill",
        "--from", str(offsets[10]), "--until", str(offsets[19]), "--url", amqp_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert ns(await drain(channel, "backfill.all")) == list(range(10, 20))


async def test_from_a_time_and_from_a_duration(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    await publish_events(amqp_url, 0, 10)
    await asyncio.sleep(2.5)  # stream timestamps are kept per chunk, compared in seconds
    moment = datetime.now(UTC).replace(microsecond=0)
    at_moment = time.monotonic()
    # A wide gap: a duration is counted from when the command starts, seconds after this
    # test computes it on a loaded machine.
    await asyncio.sleep(8.0)
    await publish_events(amqp_url, 10, 10)

    by_time = await rabbitflow(
        "replay", "orders.events", "--to", "backfill", "--from", moment.isoformat(),
        "--url", amqp_url,
    )  # fmt: skip
    assert by_time.returncode == 0, by_time.stderr
    assert ns(await drain(channel, "backfill.all")) == list(range(10, 20))

    # Back to `moment` when the command starts; its start-up moves that later, into the gap
    # (up to ~6 s of start-up still lands before the second batch).
    ago = math.ceil(time.monotonic() - at_moment)
    by_duration = await rabbitflow(
        "replay", "orders.events", "--to", "backfill", "--from", f"{ago}s", "--url", amqp_url
    )
    assert by_duration.returncode == 0, by_duration.stderr
    assert ns(await drain(channel, "backfill.all")) == list(range(10, 20))

    everything = await rabbitflow(
        "replay", "orders.events", "--to", "backfill", "--from", "1h", "--url", amqp_url
    )
    assert everything.returncode == 0, everything.stderr
    assert ns(await drain(channel, "backfill.all")) == list(range(20))


async def test_where_limit_and_routing_key(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    await publish_events(amqp_url, 0, 40)

    result = await rabbitflow(
        "replay", "orders.events", "--to", "backfill", "--where", "kind=*.paid",
        "--limit", "5", "--routing-key", "replayed.paid", "--url", amqp_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    copies = await drain(channel, "backfill.all")
    assert ns(copies) == [1, 3, 5, 7, 9]
    assert {m.routing_key for m in copies} == {"replayed.paid"}
    assert "not matching --where" in result.stdout


async def test_unroutable_copies_exit_1_and_bad_input_is_one_line(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    await publish_events(amqp_url, 0, 3)
    await channel.declare_exchange("nowhere", aio_pika.ExchangeType.DIRECT, durable=True)

    result = await rabbitflow("replay", "orders.events", "--to", "nowhere", "--url", amqp_url)
    assert result.returncode == 1
    assert "3 returned" in result.stdout and "unroutable" in result.stderr

    for args, words in [
        (("backfill.all", "--to", "backfill"), "is not a stream queue"),
        (("missing", "--to", "backfill"), "does not exist"),
        (("orders.events", "--to", "backfill", "--from", "yesterday"), "invalid position"),
        (("orders.events", "--to", "backfill", "--until", "1h"), "invalid --until"),
        (("orders.events", "--to", "backfill", "--where", "kind"), "HEADER=VALUE"),
    ]:
        bad = await rabbitflow("replay", *args, "--url", amqp_url)
        assert bad.returncode != 0, args
        assert words in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert await message_count(channel, "backfill.all") == 0


async def test_a_replay_killed_and_run_again_publishes_every_event(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    total = 5_000
    await publish_events(amqp_url, 0, total)
    assert await last_offset(connection, "orders.events", idle=0.5) is not None
    command = [sys.executable, "-m", "rabbitflow", "replay", "orders.events", "--to", "backfill",
               "--url", amqp_url]  # fmt: skip
    first = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_for(
            lambda: _count(channel, "backfill.all", 1), timeout=60, message="copies arriving"
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 10)
    partial = await message_count(channel, "backfill.all")

    again = await rabbitflow("replay", "orders.events", "--to", "backfill", "--url", amqp_url)

    assert again.returncode == 0, again.stderr
    copies = await drain(channel, "backfill.all", limit=3 * total)
    seen = set(ns(copies))
    assert seen == set(range(total))  # every event published at least once
    assert len(copies) >= total and partial < total


async def _count(channel: Any, queue: str, at_least: int) -> bool:
    return await message_count(channel, queue) >= at_least


async def test_the_example_topology_backfills_a_new_queue(amqp_url: str, channel: Any) -> None:
    from pathlib import Path

    from rabbitflow.topology import load_topology

    example = Path(__file__).parents[3] / "topologies" / "order-events.yaml"
    conn = await connect(amqp_url)
    try:
        await declare(conn, expand(load_topology(example)))
    finally:
        await conn.close()
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            Outgoing("orders.log", f"order.{kind}", {"order_id": "42", "status": kind})
            for kind in ("placed", "paid", "shipped")
        )
    assert len(result.confirmed) == 3

    replayed = await rabbitflow(
        "replay", "orders.events", "--to", "orders.replay", "--url", amqp_url
    )

    assert replayed.returncode == 0, replayed.stderr
    copies = await drain(channel, "orders.backfill")
    assert [m.routing_key for m in copies] == ["order.placed", "order.paid", "order.shipped"]


async def test_an_empty_stream_or_a_start_past_its_end_replays_nothing(
    amqp_url: str, connection: AbstractConnection, channel: Any
) -> None:
    empty = await rabbitflow("replay", "orders.events", "--to", "backfill", "--url", amqp_url)
    assert empty.returncode == 0, empty.stderr
    assert "nothing from first" in empty.stdout and "published 0" in empty.stdout

    await publish_events(amqp_url, 0, 5)
    past = await rabbitflow(
        "replay", "orders.events", "--to", "backfill", "--from", "1000", "--url", amqp_url
    )
    assert past.returncode == 0, past.stderr
    assert "published 0" in past.stdout
    assert await message_count(channel, "backfill.all") == 0
