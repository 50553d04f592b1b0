"""The monitor's loop body: blocked connections logged once per transition."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from rabbitflow import monitor as monitor_module
from rabbitflow.health import Health
from rabbitflow.metrics import Metrics
from rabbitflow.monitor import Monitor


def test_a_blocked_connection_is_logged_once_each_way(monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = {"state": False}
    monkeypatch.setattr(monitor_module, "is_blocked", lambda _c: blocked["state"])
    connection: Any = object()
    metrics = Metrics()
    monitor = Monitor(
        metrics,
        connection=lambda: None,
        publisher=lambda: connection,
        health=lambda: Health(True),
        consumed=[],
        dead_letters=[],
        poll_interval=5,
    )
    with capture_logs() as events:
        monitor.tick()
        blocked["state"] = True
        monitor.tick()
        monitor.tick()
        assert (
            metrics.registry.get_sample_value(
                "rabbitflow_connection_blocked", {"connection": "publisher"}
            )
            == 1
        )
        blocked["state"] = False
        monitor.tick()
        monitor.tick()
    assert [(e["event"], e["log_level"], e["connection"]) for e in events] == [
        ("connection blocked by the broker (memory or disk alarm)", "warning", "publisher"),
        ("connection unblocked", "info", "publisher"),
    ]
    assert (
        metrics.registry.get_sample_value(
            "rabbitflow_connection_blocked", {"connection": "publisher"}
        )
        == 0
    )


def test_a_supervised_child_writes_its_health_when_it_changes(tmp_path: Any) -> None:
    current = {"health": Health(True)}
    monitor = Monitor(
        None,
        connection=lambda: None,
        publisher=lambda: None,
        health=lambda: current["health"],
        consumed=[],
        dead_letters=[],
        poll_interval=5,
        health_dir=str(tmp_path),
    )
    monitor.tick()
    files = list(tmp_path.glob("health_*.json"))
    assert len(files) == 1
    assert '"status": "ok"' in files[0].read_text()
    current["health"] = Health(False, ("consumer down: work",))
    monitor.tick()
    assert "consumer down: work" in files[0].read_text()
