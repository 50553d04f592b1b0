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
