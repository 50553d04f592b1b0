"""/healthz: one worker's health, the supervisor's combination, and the WSGI answer."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from rabbitflow.exposition import make_app
from rabbitflow.health import Health, combine, worker_health, write_health
from rabbitflow.metrics import Metrics
from rabbitflow.monitor import depth_targets
from rabbitflow.topology import load_text


def test_healthy_while_connected_and_consuming_or_paused() -> None:
    health = worker_health(True, True, [("a", "consuming"), ("b", "paused")])
    assert health.ok
    assert health.body()["consumers"] == {"a": "consuming", "b": "paused"}


def test_unhealthy_while_reconnecting_or_with_a_consumer_down() -> None:
    assert worker_health(True, False, [("a", "down")]).reasons == (
        "not connected to the broker (reconnecting)",
    )
    health = worker_health(True, True, [("a", "consuming"), ("b", "down")])
    assert not health.ok
    assert health.reasons == ("consumer down: b",)
    assert not worker_health(False, False, []).ok


def test_the_supervisor_needs_every_child_alive_and_healthy(tmp_path: Path) -> None:
    write_health(tmp_path, Health(True), pid=101)
    write_health(tmp_path, Health(False, ("not connected to the broker (reconnecting)",)), pid=102)
    assert combine([(0, 101, True)], tmp_path).ok
    health = combine([(0, 101, True), (1, 102, True), (2, 103, True), (3, None, False)], tmp_path)
    assert not health.ok
    assert health.reasons == (
        "process 1: not connected to the broker (reconnecting)",
        "process 2: starting",
        "process 3: not running (restarting)",
    )
    assert [p["status"] for p in health.body()["processes"]] == [
        "ok",
        "unavailable",
        "starting",
        "dead",
    ]


def call(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {
        "PATH_INFO": path,
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(),
        "SERVER_NAME": "x",
        "SERVER_PORT": "1",
    }
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_healthz_answers_503_with_the_reasons_in_json() -> None:
    state = {"health": Health(True)}
    metrics = Metrics()
    metrics.outcome("work", "ack", 0.1)
    app = make_app(metrics.registry, lambda: state["health"])
    status, headers, body = call(app, "/healthz")
    assert status.startswith("200")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    state["health"] = Health(False, ("consumer down: work",))
    status, _, body = call(app, "/healthz")
    assert status.startswith("503")
    assert json.loads(body) == {"status": "unavailable", "reasons": ["consumer down: work"]}
    status, _, body = call(app, "/metrics")
    assert status.startswith("200")
    assert b'rabbitflow_messages_total{outcome="ack",queue="work"} 1.0' in body


def test_a_failing_health_check_is_a_503_not_a_crash() -> None:
    def broken() -> Health:
        raise RuntimeError("boom")

    status, _, body = call(make_app(CollectorRegistry(), broken), "/healthz")
    assert status.startswith("503")
    assert "RuntimeError" in json.loads(body)["reasons"][0]


def test_depth_targets_cover_partitions_and_dead_letter_queues() -> None:
    topology = load_text("""
version: 1
exchanges:
  shared.dlx: {type: topic}
queues:
  work: {retry: {max_retries: 1}}
  plain: {}
  mapped: {dead_letter: {exchange: shared.dlx, routing_key: mapped}}
  shared.dead: {bind: [{exchange: shared.dlx, routing_key: "#"}]}
  parts: {partitions: {count: 2, key: routing_key}, dead_letter: true}
""")
    consumed, dead = depth_targets(topology, ["work", "plain", "mapped", "parts"])
    assert consumed == ["work", "plain", "mapped", "parts.p0", "parts.p1"]
    assert dead == [("work", "work.dlq"), ("mapped", "shared.dead"), ("parts", "parts.dlq")]


def test_a_stuck_consumer_is_unhealthy_with_the_reason() -> None:
    health = worker_health(True, True, [("a", "consuming"), ("b", "consuming")], [("b", 93.4, 81)])
    assert not health.ok
    assert health.body()["consumers"] == {"a": "consuming", "b": "stuck"}
    assert health.reasons == (
        "consumer stuck: b has held a delivery for 93s "
        "(limit 81s: its timeout, or the shutdown timeout, twice over)",
    )
