"""Publishing that never lies, on the real broker (DESIGN.md §2 publish, request)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest

from rabbitflow import (
    App,
    ExchangeNotFound,
    MessageTooLarge,
    Producer,
    PublishNacked,
    PublishTimeout,
    RequestTimeout,
    Unroutable,
)
from rabbitflow.amqp.publish import Outgoing
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.helpers import drain, message_count, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
  quotes: {type: fanout}
queues:
  orders.all:
    bind: [{exchange: orders, routing_key: "#"}]
  bounded:
    max_length: 2
    overflow: reject-publish
  lossy:
    max_length: 2
    overflow: drop-head
  pricing.a: {bind: [{exchange: quotes}]}
  pricing.b: {bind: [{exchange: quotes}]}
  pricing.c: {bind: [{exchange: quotes}]}
"""


async def declared(amqp_url: str) -> App:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    return app


@pytest.fixture
async def producer(amqp_url: str) -> Any:
    from rabbitflow.amqp.connection import connect
    from rabbitflow.amqp.declare import declare
    from rabbitflow.topology.expand import expand

    connection = await connect(amqp_url)
    await declare(connection, expand(load_text(TOPOLOGY)))
    await connection.close()
    async with Producer(amqp_url) as p:
        yield p


async def test_confirmed_publish_lands_in_the_queue(producer: Producer, channel: Any) -> None:
    message_id = await producer.publish(
        "orders", "order.placed", {"id": 1}, headers={"tenant": "acme"}
    )
    [m] = await drain(channel, "orders.all")
    assert m.message_id == message_id and len(message_id) == 32
    assert m.delivery_mode == 2 and m.content_type == "application/json"
    assert m.body == b'{"id":1}' and m.headers == {"tenant": "acme"}


async def test_unroutable_raises_naming_exchange_and_key(producer: Producer) -> None:
    with pytest.raises(Unroutable, match=r"exchange '' for routing key 'no.such.queue'"):
        await producer.publish("", "no.such.queue", {"id": 1})
    # the channel survives: the next publish works
    await producer.publish("orders", "order.placed", {"id": 2})


async def test_missing_exchange_raises_and_the_next_publish_works(producer: Producer) -> None:
    with pytest.raises(ExchangeNotFound, match="exchange 'nope' does not exist"):
        await producer.publish("nope", "x", {"id": 1})
    await producer.publish("orders", "order.placed", {"id": 2})


async def test_full_reject_publish_queue_nacks(producer: Producer) -> None:
    """Throttling: a bounded queue makes the producer see the overflow and back off."""
    await producer.publish("", "bounded", 1)
    await producer.publish("", "bounded", 2)
    with pytest.raises(PublishNacked):
        await producer.publish("", "bounded", 3)


async def test_drop_head_queue_drops_the_oldest(producer: Producer, channel: Any) -> None:
    """Dropping: the producer is never told; the oldest messages go (a topology choice)."""
    for n in range(5):
        await producer.publish("", "lossy", n)
    assert [m.body for m in await drain(channel, "lossy")] == [b"3", b"4"]


async def test_oversized_body_raises_before_sending(
    producer: Producer, amqp_url: str, channel: Any
) -> None:
    settings = Settings(url=amqp_url, max_message_size="1KiB")
    async with Producer(settings=settings) as producer:
        with pytest.raises(MessageTooLarge, match="exceeds the 1024-byte limit"):
            await producer.publish("", "bounded", b"x" * 1025)
        assert producer.link.current is None  # nothing was even connected
    assert await message_count(channel, "bounded") == 0


async def test_bulk_publish_of_50000_is_all_confirmed(producer: Producer, channel: Any) -> None:
    started = time.perf_counter()
    result = await producer.publish_many(
        (Outgoing("orders", "order.bulk", {"n": n}) for n in range(50_000)), window=2000
    )
    elapsed = time.perf_counter() - started
    assert result.ok and len(result.confirmed) == 50_000
    assert await message_count(channel, "orders.all") == 50_000
    print(f"bulk publish: {50_000 / elapsed:.0f} msg/s")


async def test_bulk_publish_reports_each_outcome(producer: Producer) -> None:
    result = await producer.publish_many(
        [
            Outgoing("orders", "order.ok", 1),
            Outgoing("", "nowhere", 2),
            Outgoing("", "bounded", 3),
            Outgoing("", "bounded", 4),
            Outgoing("", "bounded", 5),
        ],
        window=1,
    )
    assert result.confirmed == [0, 2, 3]
    assert result.returned == [1]
    assert result.nacked == [4]


async def test_request_without_responder_times_out_on_time(producer: Producer) -> None:
    began = time.monotonic()
    with pytest.raises(RequestTimeout, match="no reply from 'orders'"):
        await producer.request("orders", "order.quote", {"id": 1}, timeout=0.5)
    # At the timeout, never before; the upper margin is for a loaded 2-core machine.
    assert 0.45 <= time.monotonic() - began < 3


async def test_scatter_gather_collects_from_three_responders(amqp_url: str) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    for name, price in (("pricing.a", 10), ("pricing.b", 12), ("pricing.c", 9)):

        def make(p: int) -> Any:
            async def quote(body: dict[str, Any]) -> dict[str, Any]:
                return {"price": p * body["qty"]}

            return quote

        app.handler(name)(make(price))
    async with app:
        replies = await app.gather("quotes", "", {"qty": 2}, expected=3, timeout=5)
        assert sorted(r["price"] for r in replies) == [18, 20, 24]
        began = time.monotonic()
        partial = await app.gather("quotes", "", {"qty": 1}, expected=4, timeout=0.5)
        assert len(partial) == 3 and time.monotonic() - began >= 0.45


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args], capture_output=True, text=True, timeout=60
    )


async def test_cli_publish_summary_matches_the_queue(
    producer: Producer, amqp_url: str, channel: Any, tmp_path: Any
) -> None:
    lines = tmp_path / "orders.jsonl"
    lines.write_text("\n".join(f'{{"id": {i}}}' for i in range(50)) + "\n")
    done = cli(
        "publish",
        "orders",
        "order.file",
        "--file",
        str(lines),
        "--count",
        "2",
        "--header",
        "source=cli",
        "--url",
        amqp_url,
    )
    assert done.returncode == 0, done.stderr
    assert "published 100" in done.stdout and "100 confirmed, 0 returned, 0 nacked" in done.stdout
    assert "guest:guest" not in done.stdout
    assert await message_count(channel, "orders.all") == 100
    [first, *_] = await drain(channel, "orders.all")
    assert first.headers == {"source": "cli"}


async def test_cli_publish_exits_1_when_unroutable(producer: Producer, amqp_url: str) -> None:
    done = cli("publish", "", "nowhere", '{"a": 1}', "--url", amqp_url)
    assert done.returncode == 1
    assert "0 confirmed, 1 returned" in done.stdout


def test_cli_publish_rejects_bad_jsonl_before_sending(tmp_path: Any) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ok": 1}\n{oops}\n')
    done = cli(
        "publish", "orders", "x", "--file", str(bad), "--url", "amqp://guest:guest@127.0.0.1:1/"
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"error: {bad}:2: not valid JSON")
    assert "Traceback" not in done.stderr


def test_cli_publish_with_the_broker_down_fails_fast_masked() -> None:
    began = time.monotonic()
    done = cli("publish", "orders", "x", "{}", "--url", "amqp://guest:s3cret@127.0.0.1:1/")
    assert done.returncode == 1 and time.monotonic() - began < 10
    assert "s3cret" not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1 and "cannot connect to RabbitMQ" in done.stderr


@pytest.mark.disruptive
async def test_memory_alarm_blocks_publishers_then_they_resume(amqp_url: str, channel: Any) -> None:
    """Buffering: while the broker's memory alarm is on, publishes wait then raise
    within the timeout; the consuming connection keeps acking; after the alarm clears
    publishing resumes."""
    app = App(
        load_text(TOPOLOGY), url=amqp_url, settings=Settings(url=amqp_url, publish_timeout=1.0)
    )
    handled: list[int] = []

    @app.handler("orders.all")
    async def handle(n: int) -> None:
        handled.append(n)

    async with app:
        await app.publish("orders", "order.a", 1)
        await wait_for(lambda: handled == [1])
        try:
            _rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
            await asyncio.sleep(1.0)
            began = time.monotonic()
            with pytest.raises(PublishTimeout, match=r"blocked|within"):
                await app.publish("orders", "order.b", 2)
            assert time.monotonic() - began < 5  # publish_timeout 1 s; margin for load
        finally:
            _rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        await wait_for(lambda: not _alarmed(), timeout=20, interval=0.5)
        await app.publish("orders", "order.c", 3)
        await wait_for(lambda: 3 in handled, timeout=10)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=30)


def _alarmed() -> bool:
    out = subprocess.run(["rabbitmqctl", "status"], capture_output=True, text=True, timeout=30)
    return "memory" in out.stdout.split("Alarms", 1)[-1].split("\n\n", 1)[0].lower()


async def test_a_run_of_nacks_makes_the_publisher_open_a_new_channel(producer: Producer) -> None:
    """A channel stuck nacking (a dead quorum leader) is replaced after 10 nacks in a row;
    the broker's nacks arrive as aiormq exceptions, so this goes through `send` itself."""
    from rabbitflow.amqp.publish import NACKS_BEFORE_NEW_CHANNEL

    await producer.publish("", "bounded", 1)
    await producer.publish("", "bounded", 2)
    first = producer.publisher._raw
    for _ in range(NACKS_BEFORE_NEW_CHANNEL):
        with pytest.raises(PublishNacked):
            await producer.publish("", "bounded", 3)
    assert producer.publisher._raw is None or producer.publisher._raw is not first
    await producer.publish("orders", "order.after", 4)  # works on the new channel
