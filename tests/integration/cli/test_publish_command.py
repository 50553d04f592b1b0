"""`rabbitflow publish` on the real broker: the properties it is given arrive, a returned
message is an error naming its routing key, and JSON/text/raw bodies arrive as meant."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import drain

pytestmark = pytest.mark.broker


async def rabbitflow(*args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the test's own connection keeps its heartbeats meanwhile.
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def inbox(channel: Any) -> str:
    await channel.declare_queue("inbox", durable=True)
    return "inbox"


async def test_properties_given_on_the_command_line_arrive(
    amqp_url: str, channel: Any, inbox: str
) -> None:
    result = await rabbitflow(
        "publish", "", inbox, "hello <b>",
        "--content-type", "text/html",
        "--message-id", "m-1",
        "--correlation-id", "c-1",
        "--expiration", "1m",
        "--url", amqp_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    [message] = await drain(channel, inbox)
    assert message.body == b"hello <b>"
    assert (message.content_type, message.message_id, message.correlation_id) == (
        "text/html",
        "m-1",
        "c-1",
    )
    assert message.expiration == 60.0  # aio-pika reads the "60000" ms as seconds


async def test_body_file_is_sent_raw(
    amqp_url: str, channel: Any, inbox: str, tmp_path: Path
) -> None:
    payload = bytes(range(256))
    (tmp_path / "body.bin").write_bytes(payload)
    result = await rabbitflow(
        "publish", "", inbox, "--body-file", str(tmp_path / "body.bin"), "--url", amqp_url
    )

    assert result.returncode == 0, result.stderr
    [message] = await drain(channel, inbox)
    assert (message.body, message.content_type) == (payload, "application/octet-stream")


async def test_json_and_text_bodies(amqp_url: str, channel: Any, inbox: str) -> None:
    as_json = await rabbitflow("publish", "", inbox, '{"a": 1}', "--url", amqp_url)
    as_text = await rabbitflow(
        "publish", "", inbox, '{"a": 1,', "--content-type", "text/plain", "--url", amqp_url
    )
    refused = await rabbitflow("publish", "", inbox, '{"a": 1,', "--url", amqp_url)

    assert as_json.returncode == 0 and as_text.returncode == 0
    assert refused.returncode == 1
    assert "line 1 column 9 (char 8)" in refused.stderr
    first, second = await drain(channel, inbox)
    assert (first.content_type, first.body) == ("application/json", b'{"a":1}')
    assert (second.content_type, second.body) == ("text/plain", b'{"a": 1,')


async def test_a_returned_message_is_an_error_naming_its_routing_key(
    amqp_url: str, channel: Any
) -> None:
    result = await rabbitflow("publish", "amq.topic", "nobody.listens", "{}", "--url", amqp_url)

    assert result.returncode == 1
    assert "1 returned" in result.stdout
    assert result.stderr.splitlines() == [
        "error: 1 returned as unroutable: no queue is bound to exchange 'amq.topic' with "
        "routing key 'nobody.listens'"
    ]
