"""``rabbitflow status`` against the real broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from ops_helpers import DATA, Result

pytestmark = pytest.mark.broker


async def fill(channel: AbstractChannel) -> None:
    """work: 3 ready (one of them back from its 50ms delay queue); work.dlq: 2."""
    for _ in range(2):
        await channel.default_exchange.publish(aio_pika.Message(b"w"), routing_key="work")
        await channel.default_exchange.publish(aio_pika.Message(b"d"), routing_key="work.dlq")
    await channel.default_exchange.publish(aio_pika.Message(b"r"), routing_key="work.retry.50ms")
    work = await channel.declare_queue("work", passive=True)
    for _ in range(100):
        work = await channel.declare_queue("work", passive=True)
        if work.declaration_result.message_count == 3:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the retry message did not come back to work")


def rows_of(result: Result) -> dict[str, dict[str, Any]]:
    assert result.code == 0, result.err
    return {r["queue"]: r for r in map(json.loads, result.out.splitlines())}


async def test_status_json_shows_depths_and_dead_letters(
    cli: Callable[..., Result], channel: AbstractChannel, declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    await fill(channel)
    # The management API refreshes queue statistics every few seconds: wait for them.
    for _ in range(30):
        rows = rows_of(cli("status", str(DATA / "dlq.yaml"), "--json"))
        work_row = rows["work"]
        settled = work_row["consumers"] is not None and work_row["publish_rate"] is not None
        if work_row["ready"] == 3 and work_row["dead_letters"] == 2 and settled:
            break
        await asyncio.sleep(0.5)
    assert set(rows) == {"work", "audit.copy", "work.quorum", "billing", "shipping", "failed.all"}
    work = rows["work"]
    assert (work["ready"], work["unacked"], work["consumers"]) == (3, 0, 0)
    assert (work["dead_letter_queue"], work["dead_letters"]) == ("work.dlq", 2)
    assert work["retrying"] == 0
    assert work["publish_rate"] is not None


async def test_status_without_files_lists_every_queue_of_the_vhost(
    cli: Callable[..., Result], channel: AbstractChannel, declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    await fill(channel)
    result = cli("status", env={"COLUMNS": "200"})
    assert result.code == 0, result.err
    assert "work.quorum" in result.out
    assert "dead letters" in result.out
    assert "work.dlq" not in result.out  # shown on the row of work, not as a row


async def test_status_falls_back_to_amqp_without_management(
    cli: Callable[..., Result], channel: AbstractChannel, declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("dlq.yaml")
    await fill(channel)
    env = {"RABBITFLOW_MANAGEMENT_URL": "http://127.0.0.1:1"}
    result = cli("status", str(DATA / "dlq.yaml"), "--json", env=env)
    assert result.code == 0, result.err
    assert "Showing what AMQP tells" in result.err
    work = next(r for r in map(json.loads, result.out.splitlines()) if r["queue"] == "work")
    assert (work["ready"], work["unacked"], work["dead_letters"]) == (3, None, 2)
    assert (work["retrying"], work["publish_rate"]) == (0, None)
    without_files = cli("status", env=env)
    assert without_files.code == 1
    assert without_files.err.splitlines()[-1].startswith(
        "error: without the management plugin, status needs topology files"
    )


async def test_status_reports_a_missing_queue(cli: Callable[..., Result]) -> None:
    result = cli("status", str(DATA / "minimal.yaml"), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out.splitlines()[0])["exists"] is False


DELAYED = """
version: 1
exchanges:
  orders: {type: topic, delayed: true}
queues:
  due:
    bind: [{exchange: orders, routing_key: "order.*"}]
"""


def ladder_of(result: Result) -> dict[str, Any]:
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    ladders = [line for line in lines if "delay_ladder" in line]
    assert len(ladders) == 1, result.out
    return ladders[0]


async def test_status_shows_the_delay_ladder_and_what_waits_in_it(
    cli: Callable[..., Result],
    amqp_url: str,
    declare: Callable[[Any], Awaitable[Any]],
    tmp_path: Any,
) -> None:
    """Delays of 40 s (levels 05 and 03) and 1 h (levels 11, 10, 09 and 04): while they
    wait, status counts them at the level holding them (05 and 11 first), with the
    management API and without it."""
    from rabbitflow import Producer
    from rabbitflow.topology import load_text

    topology_file = tmp_path / "delayed.yaml"
    topology_file.write_text(DELAYED)
    await declare(load_text(DELAYED))
    async with Producer(amqp_url) as producer:
        for _ in range(3):
            await producer.publish("orders", "order.later", {"n": 1}, delay=40)
        await producer.publish("orders", "order.later", {"n": 2}, delay=3600)
    # The management API refreshes queue statistics every few seconds: wait for them.
    for _ in range(40):
        ladder = ladder_of(cli("status", str(topology_file), "--json"))
        if ladder["waiting"] == 4:
            break
        await asyncio.sleep(0.25)
    waiting = {level["level"]: level["waiting"] for level in ladder["levels"] if level["waiting"]}
    assert waiting == {5: 3, 11: 1}, ladder
    assert ladder["missing"] == []
    assert len(ladder["levels"]) == 22
    rows = [
        json.loads(line) for line in cli("status", str(topology_file), "--json").out.splitlines()
    ]
    assert [r["queue"] for r in rows if "delay_ladder" not in r] == ["due"]

    table = cli("status", str(topology_file), env={"COLUMNS": "200"})
    assert table.code == 0, table.err
    assert "delay ladder: 4 message(s) waiting in 2 of 22 levels" in table.out
    assert "rabbitflow.delay.level.11" in table.out and "34m8s" in table.out
    assert "rabbitflow.delay.level.06" not in table.out  # empty levels have no row

    # Without topology files the ladder's 22 queues are not work-queue rows.
    bare = cli("status", env={"COLUMNS": "200"})
    assert bare.code == 0, bare.err
    assert "delay ladder: 4 message(s)" in bare.out
    assert "rabbitflow.delay.level.00" not in bare.out.split("delay ladder")[0]

    env = {"RABBITFLOW_MANAGEMENT_URL": "http://127.0.0.1:1"}
    over_amqp = ladder_of(cli("status", str(topology_file), "--json", env=env))
    assert over_amqp["waiting"] == 4
    assert over_amqp["dead_lettering"] == 0
