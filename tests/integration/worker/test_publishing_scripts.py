"""A script that only publishes or requests exits cleanly whichever way it is written,
and never consumes (takes messages from the real workers)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import message_count

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import asyncio, sys
from rabbitflow import App, Producer, RequestTimeout

URL = sys.argv[2]
app = App(topology=sys.argv[3], url=URL)

@app.handler("work")
async def handle(body: dict) -> None:
    print("HANDLED")

async def producer() -> None:
    async with Producer(URL) as p:
        await p.publish("", "work", {"n": 1})

async def producer_left_open() -> None:
    await Producer(URL).publish("", "work", {"n": 1})

async def app_left_open() -> None:
    await app.publish("", "work", {"n": 1})

async def app_closed() -> None:
    await app.publish("", "work", {"n": 1})
    await app.close()

async def request_left_open() -> None:
    try:
        await app.request("", "nobody", {"n": 1}, timeout=0.2)
    except Exception as exc:
        print(type(exc).__name__)
    await app.publish("", "work", {"n": 1})

asyncio.run(globals()[sys.argv[1]]())
"""


@pytest.mark.parametrize(
    "way", ["producer", "producer_left_open", "app_left_open", "app_closed", "request_left_open"]
)
async def test_a_publishing_script_exits_cleanly_and_consumes_nothing(
    way: str, amqp_url: str, channel: Any, tmp_path: Path
) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text("version: 1\nqueues:\n  work: {}\n  nobody: {}\n")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    await channel.declare_queue("work")
    await channel.declare_queue("nobody")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), way, amqp_url, str(topology)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "RABBITFLOW_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "Task was destroyed" not in done.stderr
    assert "Traceback" not in done.stderr
    assert "HANDLED" not in done.stdout
    assert await message_count(channel, "work") == 1  # published, and left for the workers
