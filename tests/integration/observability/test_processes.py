"""``rabbitflow run --metrics-port``: one process, and ``--processes 2`` behind one
endpoint served by the supervisor."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.integration.observability.scrape import free_port, healthz, sample, scrape
from tests.integration.worker.procs import publish_ids, started_consuming

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def acks(port: int) -> float:
    try:
        return sample(scrape(port), "rabbitflow_messages_total", queue="jobs", outcome="ack") or 0.0
    except Exception:
        return -1.0


async def test_run_serves_metrics_and_health(
    worker: Any,
    amqp_url: str,
    vhost: str,
) -> None:
    port = free_port()
    w = worker()
    w.start("--metrics-port", str(port))
    await started_consuming(vhost)
    await wait_for(lambda: healthz(port)[0] == 200, timeout=20, interval=0.1)
    await publish_ids(amqp_url, range(25))
    await wait_for(lambda: acks(port) == 25, timeout=20, interval=0.1, message="25 acks")
    assert healthz(port)[1]["consumers"] == {"jobs": "consuming"}
    assert w.stop() == 0


async def test_two_processes_are_summed_by_the_supervisor(
    worker: Any,
    amqp_url: str,
    vhost: str,
) -> None:
    port = free_port()
    w = worker(HANDLER_SLEEP="0.01", HANDLER_PREFETCH="5")
    w.start("--processes", "2", "--metrics-port", str(port))
    await started_consuming(vhost, consumers=2)
    await wait_for(lambda: healthz(port)[0] == 200, timeout=20, interval=0.1, message="healthy")
    _, body = healthz(port)
    assert [p["status"] for p in body["processes"]] == ["ok", "ok"]
    await publish_ids(amqp_url, range(300))
    await wait_for(lambda: len(w.done()) == 300, timeout=60, interval=0.1, message="300 handled")
    pids = {line[3] for line in w.lines()}
    assert len(pids) == 2  # both processes took part
    await wait_for(lambda: acks(port) == 300, timeout=10, interval=0.1, message="300 acks")
    s = scrape(port)
    assert sample(s, "rabbitflow_handler_seconds_count", queue="jobs") == 300
    # in-flight counts are sampled by each child every 0.25 s
    await wait_for(
        lambda: sample(scrape(port), "rabbitflow_in_flight", queue="jobs") == 0,
        timeout=10,
        interval=0.1,
        message="nothing in flight",
    )

    # A child killed: /healthz says so until the supervisor restarted it; the counts of
    # the dead child stay in the total.
    victim = int(body["processes"][0]["pid"])
    os.kill(victim, signal.SIGKILL)
    await wait_for(
        lambda: healthz(port)[0] == 503,
        timeout=10,
        interval=0.05,
        message="503 while a child is down",
    )
    await wait_for(
        lambda: healthz(port)[0] == 200, timeout=30, interval=0.1, message="200 after the restart"
    )
    assert acks(port) == 300
    assert victim not in [p["pid"] for p in healthz(port)[1]["processes"]]
    assert w.stop() == 0
