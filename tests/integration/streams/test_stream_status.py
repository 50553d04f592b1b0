"""`rabbitflow status` for a stream on the real broker: events held, first and last
offsets (peeked over AMQP: RabbitMQ 3.10's management API tells neither), and with
--offsets each stored consumer position with its lag; the stream is left unchanged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractConnection

from rabbitflow import SQLiteOffsets
from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.producer import Producer
from rabbitflow.streams.replay import read
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand
from tests.helpers import queue_info, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """\
version: 1
queues:
  orders.events: {type: stream, max_age: 7d}
  work: {}
"""


@pytest.fixture
async def connection(amqp_url: str, tmp_path: Path) -> AsyncIterator[AbstractConnection]:
    (tmp_path / "t.yaml").write_text(TOPOLOGY)
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
        timeout=60,
        check=False,
    )


async def test_status_shows_offsets_positions_and_lag(
    amqp_url: str, vhost: str, connection: AbstractConnection, tmp_path: Path
) -> None:
    async with Producer(amqp_url) as producer:
        result = await producer.publish_many(
            Outgoing("", "orders.events", {"n": i}) for i in range(25)
        )
    assert len(result.confirmed) == 25
    offsets = [e.offset async for e in read(connection, "orders.events", "first", idle=0.5)]
    db = tmp_path / "offsets.db"
    async with SQLiteOffsets(db) as store:
        await store.store("order-status-v1", "orders.events", offsets[19])
        await store.store("audit", "orders.events", offsets[-1])
    await wait_for(  # the management API's counts lag by a few seconds
        lambda: queue_info(vhost, "orders.events").get("messages") == 25, timeout=30
    )

    as_json = await rabbitflow(
        "status", str(tmp_path / "t.yaml"), "--json", "--offsets", f"sqlite:{db}",
        "--url", amqp_url,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    rows = {r["queue"]: r for r in map(json.loads, as_json.stdout.splitlines())}
    assert "stream" not in rows["work"]
    stream = rows["orders.events"]["stream"]
    assert (stream["messages"], stream["first_offset"], stream["last_offset"]) == (
        25,
        offsets[0],
        offsets[-1],
    )
    assert stream["positions"] == [
        {"consumer_name": "audit", "offset": offsets[-1], "lag": 0},
        {"consumer_name": "order-status-v1", "offset": offsets[19], "lag": 5},
    ]

    table = await rabbitflow(
        "status", "--offsets", f"sqlite:{db}", "--url", amqp_url
    )  # every queue of the vhost: the stream is found by its type
    assert table.returncode == 0, table.stderr
    assert "streams" in table.stdout and "order-status-v1" in table.stdout
    line = next(x for x in table.stdout.splitlines() if "order-status-v1" in x)
    assert line.split("│")[-2].strip() == "5"  # the lag column
    after = [e.offset async for e in read(connection, "orders.events", "first", idle=0.5)]
    assert after == offsets


async def test_a_bad_offset_store_is_one_line(amqp_url: str) -> None:
    result = await rabbitflow("status", "--offsets", "postgres://x", "--url", amqp_url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid offset store 'postgres://x': use sqlite:PATH or redis://HOST:PORT/DB"
    ]
