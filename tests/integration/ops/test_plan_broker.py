"""``rabbitflow plan`` against the real broker."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from ops_helpers import DATA, Result

pytestmark = pytest.mark.broker


async def test_plan_is_in_sync_after_declaring_the_files(
    cli: Callable[..., Result], declare: Callable[[str], Awaitable[Any]]
) -> None:
    await declare("orders.yaml")
    result = cli("plan", str(DATA / "orders.yaml"))
    assert result.code == 0, result.out + result.err
    assert "in sync" in result.out


async def test_plan_on_an_empty_vhost_lists_everything_to_create(
    cli: Callable[..., Result],
) -> None:
    result = cli("plan", str(DATA / "minimal.yaml"), "--json")
    assert result.code == 2, result.err
    changes = [json.loads(line) for line in result.out.splitlines()]
    assert {(c["action"], c["kind"], c["name"]) for c in changes} == {
        ("create", "queue", "'jobs'"),
        ("create", "queue", "'jobs.retry.1s'"),
        ("create", "queue", "'jobs.retry.2s'"),
        ("create", "queue", "'jobs.retry.4s'"),
        ("create", "exchange", "'jobs.dlx'"),
        ("create", "queue", "'jobs.dlq'"),
        ("create", "binding", "'jobs.dlx' -> queue 'jobs.dlq' (routing key '')"),
    }


async def test_plan_reports_each_kind_of_difference_and_exits_2(
    cli: Callable[..., Result],
    channel: AbstractChannel,
    declare: Callable[[str], Awaitable[Any]],
    tmp_path: Path,
) -> None:
    await declare("orders.yaml")
    # On the broker, in no file: an exchange, a queue and a binding.
    await channel.declare_exchange("legacy", aio_pika.ExchangeType.FANOUT, durable=True)
    legacy = await channel.declare_queue("legacy.q", durable=True)
    await legacy.bind("orders", routing_key="legacy.#")
    text = (DATA / "orders.yaml").read_text()
    changed = (
        text.replace("max_length: 100000", "max_length: 5000")
        .replace("  orders.unrouted.log:\n", "  brand.new: {}\n  orders.unrouted.log:\n")
        .replace(
            "routing_keys: [order.placed, order.updated]",
            "routing_keys: [order.placed, order.updated, order.cancelled]",
        )
        .replace(
            "notifications: {type: fanout, alternate_exchange: orders.unrouted}",
            "notifications: {type: direct, alternate_exchange: orders.unrouted}",
        )
    )
    path = tmp_path / "orders.yaml"
    path.write_text(changed)
    result = cli("plan", str(path))
    assert result.code == 2, result.err
    lines = result.out.splitlines()
    assert "create queue 'brand.new'" in lines
    assert "differ queue 'payments.charge': x-max-length 100000 (broker) -> 5000 (files)" in lines
    assert "differ exchange 'notifications': type 'fanout' (broker) -> 'direct' (files)" in lines
    assert (
        "create binding 'orders' -> queue 'payments.charge' (routing key 'order.cancelled')"
    ) in lines
    assert "extra exchange 'legacy'" in lines
    assert "extra queue 'legacy.q'" in lines
    assert "extra binding 'orders' -> queue 'legacy.q' (routing key 'legacy.#')" in lines
    assert lines[-1].startswith("2 to create, 2 differing, 3 on the broker but in no file")


async def test_plan_without_management_is_one_line(cli: Callable[..., Result]) -> None:
    result = cli(
        "plan", str(DATA / "minimal.yaml"), env={"RABBITFLOW_MANAGEMENT_URL": "http://127.0.0.1:1"}
    )
    assert result.code == 1
    assert result.err.startswith("error: management API at http://127.0.0.1:1/api is not reachable")
    assert "rabbitmq-plugins enable rabbitmq_management" in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_plan_never_prints_the_password(cli: Callable[..., Result]) -> None:
    result = cli(
        "plan",
        str(DATA / "minimal.yaml"),
        env={"RABBITFLOW_MANAGEMENT_URL": "http://guest:s3cret@127.0.0.1:1"},
    )
    assert result.code == 1
    assert "s3cret" not in result.err + result.out
