"""The on-call workflow with a real worker: failures dead-lettered by the worker, listed,
the bug fixed, replayed to the queue only, and processed."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from rabbitflow import App, Message
from rabbitflow.topology import load_text
from tests.helpers import drain, message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  billing:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 1, delay: 50ms}
  audit:
    bind: [{exchange: orders, routing_key: "order.*"}]
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args], capture_output=True, text=True, timeout=60
    )


async def test_dead_letters_of_a_worker_are_listed_replayed_and_processed(
    amqp_url: str, channel: Any
) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    fixed = False
    processed: list[tuple[int, int]] = []

    @app.handler("billing")
    async def bill(order: dict[str, int], message: Message) -> None:
        if not fixed and order["id"] % 2:
            raise ValueError(f"tax table missing for order {order['id']}")
        processed.append((order["id"], message.attempt))

    async with app:
        for i in range(6):
            await app.publish("orders", "order.placed", {"id": i})
        await wait_for(lambda: _count(channel, "billing.dlq", 3), timeout=10)
        await drain(channel, "audit")

        listed = cli("dlq", "list", "billing", "--json", "--url", amqp_url)
        assert listed.returncode == 0, listed.stderr
        letters = [json.loads(line) for line in listed.stdout.splitlines()]
        assert len(letters) == 3
        assert all("tax table missing" in json.dumps(letter) for letter in letters)
        assert await message_count(channel, "billing.dlq") == 3  # listing left them

        fixed = True
        replayed = cli("dlq", "replay", "billing", "--url", amqp_url)
        assert replayed.returncode == 0, replayed.stderr
        assert "3" in replayed.stdout
        await wait_for(lambda: len(processed) == 6, timeout=10)

    assert sorted(i for i, _ in processed) == list(range(6))
    assert {attempt for i, attempt in processed if i % 2} == {1}  # attempt count reset
    assert await message_count(channel, "billing.dlq") == 0
    assert await message_count(channel, "audit") == 0  # other subscribers never saw them


async def _count(channel: Any, queue: str, n: int) -> bool:
    return await message_count(channel, queue) == n
