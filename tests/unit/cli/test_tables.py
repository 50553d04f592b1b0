"""`status` and `dlq list` never cut a name when their output is not a terminal."""

from __future__ import annotations

import pytest

from rabbitflow.amqp.status import QueueStatus
from rabbitflow.cli.dlq import _print_table
from rabbitflow.cli.ops import _show_status
from rabbitflow.topology.dead_letters import DeadLetterQueue

LONG = [f"notify.{kind}.{'x' * 90}" for kind in ("email", "sms")]


def test_status_prints_whole_names_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    _show_status([QueueStatus(name, ready=1, unacked=0, consumers=0) for name in LONG], None, False)
    out = capsys.readouterr().out
    assert all(name in out for name in LONG)
    assert "…" not in out


def test_dlq_list_prints_whole_values_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {
            "position": i,
            "message_id": name,
            "attempt": 4,
            "failed_at": "2026-12-01T10:00:00.000+00:00",
            "error": f"RuntimeError: {name} failed",
            "exchange": "orders",
            "routing_key": name,
        }
        for i, name in enumerate(LONG, 1)
    ]
    _print_table(rows, DeadLetterQueue(f"{LONG[0]}.dlq", LONG[0]))
    lines = capsys.readouterr().out.splitlines()
    assert all(any(f"RuntimeError: {name} failed" in line for line in lines) for name in LONG)
    assert any(f"orders / {LONG[1]}" in line for line in lines)
