"""What validation accepts, the real broker and client accept: names at the limits,
odd characters and long retry schedules declare; what they would refuse never validates."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from rabbitflow.topology.names import name_problem
from tests.conftest import MANAGEMENT

pytestmark = pytest.mark.broker

# Every character the AMQP client sends, a queue of 255 bytes whose generated names fit,
# an exchange of 127 characters.
EDGE_QUEUE = "a-b_c.d:e@f#g,h/i+j k"
LONG_QUEUE = "q" * (255 - len(".retry.1s"))
LONG_EXCHANGE = "e" * 127


def rabbitflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_names_at_the_limits_validate_and_declare(
    amqp_url: str, vhost: str, tmp_path: Path
) -> None:
    topology = tmp_path / "edges.yaml"
    topology.write_text(
        "version: 1\n"
        f"exchanges:\n  '{LONG_EXCHANGE}': {{type: topic}}\n"
        "queues:\n"
        f"  '{EDGE_QUEUE}':\n"
        f"    bind: [{{exchange: '{LONG_EXCHANGE}', routing_key: 'заказ.создан'}}]\n"
        f"  '{LONG_QUEUE}':\n"
        "    retry: {max_retries: 10000, delay: 1s, max_delay: 1s}\n"
        "    dead_letter: false\n",
        encoding="utf-8",
    )
    validated = rabbitflow("validate", str(topology))
    declared = rabbitflow("declare", str(topology), "--url", amqp_url)

    assert validated.returncode == 0, validated.stderr
    assert declared.returncode == 0, declared.stderr
    with httpx.Client(base_url=MANAGEMENT, auth=("guest", "guest"), timeout=10) as api:
        names = {q["name"] for q in api.get(f"/queues/{vhost}").raise_for_status().json()}
    assert names == {EDGE_QUEUE, LONG_QUEUE, f"{LONG_QUEUE}.retry.1s"}


@pytest.mark.parametrize("command", ["validate", "graph", "declare"])
def test_an_overflowing_schedule_is_one_located_line(
    command: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    topology = tmp_path / "retries.yaml"
    topology.write_text(
        "version: 1\nqueues:\n  jobs:\n    retry: {max_retries: 10000}\n"
        "  many:\n    retry: {max_retries: 1000000000, backoff: fixed}\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    url = ["--url", request.getfixturevalue("amqp_url")] if command == "declare" else []
    result = rabbitflow(command, str(topology), *url)

    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0] == (
        f"{topology}:4:5: queues.jobs.retry: retry 10000 would wait more than 2^64 ms, above "
        "the broker's limit of 4294967295 ms (about 49 days); set max_delay or an explicit "
        "delays: list"
    )


@pytest.mark.parametrize("name", ["заказы", "party 🎉", "bell\a"])
def test_the_broker_itself_accepts_names_the_client_cannot_send(vhost: str, name: str) -> None:
    """Why validation follows the client codec, not the broker: RabbitMQ takes these."""
    quoted = f"/{quote(vhost, safe='')}/{quote(name, safe='')}"
    with httpx.Client(base_url=MANAGEMENT, auth=("guest", "guest"), timeout=10) as api:
        created = api.put(f"/queues{quoted}", json={"durable": True})
        assert created.status_code == 201
        assert name in {q["name"] for q in api.get(f"/queues/{vhost}").json()}
    assert name_problem(name, "queue") is not None
