"""`rabbitflow declare` as a user runs it: a subprocess against the local broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.broker

MANAGEMENT_API = f"http://{os.environ.get('RABBITFLOW_TEST_HOST', '127.0.0.1')}:15672/api"
ROOT = Path(__file__).parents[3]
TOPOLOGIES = [str(ROOT / "topologies" / f"{n}.yaml") for n in ("orders", "media", "rpc")]


def rabbitflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _vhost_objects(vhost: str) -> tuple[list[str], list[str]]:
    with httpx.Client(base_url=MANAGEMENT_API, auth=("guest", "guest"), timeout=10) as api:
        queues = api.get(f"/queues/{vhost}").raise_for_status().json()
        exchanges = api.get(f"/exchanges/{vhost}").raise_for_status().json()
    return [q["name"] for q in queues], [e["name"] for e in exchanges]


def test_declare_twice_then_everything_exists(amqp_url: str) -> None:
    first = rabbitflow("declare", *TOPOLOGIES, "--url", amqp_url)
    second = rabbitflow("declare", *TOPOLOGIES, "--url", amqp_url)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    statuses = {line.split()[0] for line in first.stdout.splitlines()}
    assert statuses == {"created", "bound"}
    objects = [line for line in second.stdout.splitlines() if not line.startswith("bound")]
    assert len(objects) == 42
    assert all(line.startswith("exists ") for line in objects)
    assert "exists   queue    payments.charge.retry.200ms" in objects


def test_conflicts_exit_1_with_one_line_each(amqp_url: str, vhost: str, tmp_path: Path) -> None:
    classic = tmp_path / "classic.yaml"
    # The same arguments as in orders.yaml, but a classic queue.
    classic.write_text(
        "version: 1\nqueues:\n  payments.charge:\n    arguments:\n"
        "      x-dead-letter-exchange: payments.charge.dlx\n"
    )
    assert rabbitflow("declare", str(classic), "--url", amqp_url).returncode == 0

    result = rabbitflow("declare", *TOPOLOGIES, "--url", amqp_url)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: vhost '{vhost}': queue 'payments.charge' exists with x-queue-type=(not set), "
        "the files declare x-queue-type='quorum'; delete it or align the files"
    ]
    assert "created  queue    rpc.pricing" in result.stdout  # it went on


def test_different_ttl_is_reported_with_both_values(
    amqp_url: str, vhost: str, tmp_path: Path
) -> None:
    before = tmp_path / "before.yaml"
    before.write_text("version: 1\nqueues:\n  rpc.pricing: {message_ttl: 30s}\n")
    assert rabbitflow("declare", str(before), "--url", amqp_url).returncode == 0

    result = rabbitflow("declare", TOPOLOGIES[2], "--url", amqp_url)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: vhost '{vhost}': queue 'rpc.pricing' exists with x-message-ttl=30000, the "
        "files declare x-message-ttl=10000; delete it or align the files"
    ]


def test_broker_down_fails_within_seconds_with_the_password_masked() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    started = time.monotonic()
    result = rabbitflow(
        "declare", TOPOLOGIES[2], "--url", f"amqp://guest:s3cr3t-pw@127.0.0.1:{port}/"
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert elapsed < 10
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot connect to RabbitMQ: amqp://guest:***@127.0.0.1:{port}/: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})"
    ]


def test_dry_run_touches_nothing(amqp_url: str, vhost: str) -> None:
    before = _vhost_objects(vhost)
    result = rabbitflow("declare", *TOPOLOGIES, "--dry-run", "--url", amqp_url)
    assert result.returncode == 0, result.stderr
    assert "would declare queue    payments.charge" in result.stdout
    assert _vhost_objects(vhost) == before
    assert before[0] == []  # no queue at all
