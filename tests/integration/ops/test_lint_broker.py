"""``rabbitflow lint --broker`` against the real broker (the test's own vhost)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from ops_helpers import Result

from rabbitflow.topology import load_text

pytestmark = pytest.mark.broker

LIVE = """
version: 1
exchanges:
  jobs: {type: direct}
queues:
  jobs.resize:
    max_length: 10
    overflow: reject-publish
    arguments: {x-consumer-timeout: 1000}
    bind: [{exchange: jobs, routing_key: resize}]
"""


async def test_lint_broker_reports_a_queue_whose_arguments_differ_live(
    cli: Callable[..., Result], declare: Callable[[Any], Awaitable[Any]], tmp_path: Path
) -> None:
    await declare(load_text(LIVE))
    files = tmp_path / "jobs.yaml"
    files.write_text(LIVE.replace("max_length: 10", "max_length: 20"))

    plain = cli("lint", str(files))
    result = cli("lint", str(files), "--broker", "--format", "json")

    assert plain.code == 0, plain.out + plain.err
    assert result.code == 1, result.out + result.err
    [finding] = [json.loads(line) for line in result.out.splitlines()]
    assert (finding["rule"], finding["severity"], finding["line"], finding["column"]) == (
        "RF101",
        "error",
        6,
        3,
    )
    assert "'jobs.resize'" in finding["message"]
    assert "x-max-length 10 on the broker, 20 in the files" in finding["message"]


async def test_lint_broker_in_sync_files_exit_0(
    cli: Callable[..., Result], declare: Callable[[Any], Awaitable[Any]], tmp_path: Path
) -> None:
    await declare(load_text(LIVE))
    files = tmp_path / "jobs.yaml"
    files.write_text(LIVE)
    result = cli("lint", str(files), "--broker", "--strict")
    assert result.code == 0, result.out + result.err
    assert result.out == ""


async def test_lint_broker_with_app_reports_a_handler_timeout_above_the_consumer_timeout(
    cli: Callable[..., Result], declare: Callable[[Any], Awaitable[Any]], tmp_path: Path
) -> None:
    await declare(load_text(LIVE))
    files = tmp_path / "jobs.yaml"
    files.write_text(LIVE)
    (tmp_path / "lint_app.py").write_text(
        textwrap.dedent(
            f"""
            from rabbitflow import App
            app = App(topology={str(files)!r})

            @app.handler("jobs.resize", timeout=5)
            async def resize(body: dict) -> None:
                pass
            """
        )
    )
    env = {"PYTHONPATH": str(tmp_path)}

    result = cli("lint", str(files), "--broker", "--app", "lint_app:app", env=env)

    assert result.code == 1, result.out + result.err
    [line] = result.out.splitlines()
    assert line.startswith(f"{files}:6:3: RF102 error: the handler of 'jobs.resize' may run 5s")
    assert "consumer timeout there is 1s (queue argument x-consumer-timeout)" in line


async def test_lint_broker_reports_a_live_transient_queue_as_a_deprecated_feature(
    cli: Callable[..., Result],
    declare: Callable[[Any], Awaitable[Any]],
    channel: AbstractChannel,
    tmp_path: Path,
) -> None:
    await declare(load_text(LIVE))
    await channel.declare_queue("scratch", durable=False)
    files = tmp_path / "jobs.yaml"
    files.write_text(LIVE)

    result = cli("lint", str(files), "--broker", "--format", "json")

    assert result.code == 0, result.out + result.err  # a warning
    [finding] = [json.loads(line) for line in result.out.splitlines()]
    assert finding["rule"] == "RF103"
    assert finding["severity"] == "warning"
    assert "'scratch' is transient and not exclusive" in finding["message"]
