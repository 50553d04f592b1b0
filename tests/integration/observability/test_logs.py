"""Log events of a worker on the real broker, captured with structlog's testing helpers:
every event about a message carries its keys; lifecycle events come once each; no body
and no password ever appears."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from structlog.testing import capture_logs

from rabbitflow import App, Message, Reject
from rabbitflow.settings import Settings
from rabbitflow.topology import load_text
from tests.conftest import BROKER_HOST, BROKER_PORT
from tests.helpers import close_connections, wait_for
from tests.integration.worker.procs import worker_connected

pytestmark = pytest.mark.broker

PASSWORD = "pw-CANARY-4d1f"
BODY = "body-CANARY-9c2e"
MESSAGE_KEYS = {"queue", "message_id", "correlation_id", "attempt", "outcome", "duration_ms"}
TOPOLOGY = """
version: 1
queues:
  work:
    retry: {max_retries: 1, delay: 50ms}
"""


async def test_message_events_carry_their_keys_and_no_body_or_password(vhost: str) -> None:
    # The first URL fails with the canary password; the worker falls back to the second.
    url = (
        f"amqp://guest:{PASSWORD}@{BROKER_HOST}:1/{vhost},"
        f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/{vhost}"
    )
    app = App(load_text(TOPOLOGY), settings=Settings(url=url, log_level="DEBUG"))
    handled: list[str] = []

    @app.handler("work")
    async def handle(body: dict[str, Any], message: Message) -> None:
        handled.append(body["kind"])
        if body["kind"] == "retry" and message.attempt == 1:
            raise RuntimeError("try again")
        if body["kind"] == "reject":
            raise Reject("no")

    with capture_logs() as events:
        async with app:
            for kind in ("ok", "retry", "reject"):
                await app.publish(
                    "", "work", {"kind": kind, "secret": BODY}, correlation_id=f"c-{kind}"
                )
            await app.publish("", "work", b"not json " + BODY.encode())  # decode failure
            await wait_for(lambda: len(handled) == 4, timeout=10, message="4 handler runs")
            await wait_for(
                lambda: any(
                    e["event"] == "handler failed; dead-lettered"
                    and "BodyDecodeError" in e["error"]
                    for e in events
                ),
                timeout=10,
                message="the decode failure dead-lettered",
            )
            # The management API lists a new connection a few seconds late.
            await wait_for(
                lambda: worker_connected(vhost),
                timeout=20,
                interval=0.2,
                message="the worker's connection listed",
            )
            close_connections(vhost)
            await wait_for(
                lambda: any(e["event"] == "reconnected; consumers resumed" for e in events),
                timeout=20,
                message="reconnected",
            )

    about_messages = [e for e in events if "message_id" in e]
    outcomes = collections.Counter((e["event"], e["outcome"]) for e in about_messages)
    assert outcomes == {
        ("message handled", "ack"): 2,
        ("handler failed; retrying", "retry"): 1,
        ("handler failed; dead-lettered", "dead_letter"): 2,
    }
    for event in about_messages:
        assert event.keys() >= MESSAGE_KEYS, event
        assert event["queue"] == "work"
        assert event["duration_ms"] >= 0
    retried = [e for e in about_messages if e["correlation_id"] == "c-retry"]
    assert [e["attempt"] for e in retried] == [1, 2]

    lifecycle = collections.Counter(e["event"] for e in events if "message_id" not in e)
    assert lifecycle["worker connected"] == 2  # start and reconnect
    assert lifecycle["consumer started"] == 2
    assert lifecycle["connection lost"] == 1
    assert lifecycle["reconnecting"] == 1
    assert lifecycle["shutting down"] == 1
    levels = {e["event"]: e["log_level"] for e in events}
    assert levels["connection lost"] == "warning"
    assert levels["reconnecting"] == "warning"
    assert levels["worker connected"] == "info"

    text = repr(events)
    assert PASSWORD not in text
    assert BODY not in text
    assert "not json" not in text
