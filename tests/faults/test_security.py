"""Secrets and TLS: a password unique to the run never shows up; amqps:// verifies the
broker's certificate unless told not to, and says so."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rabbitflow.amqp.connection import connect
from rabbitflow.errors import BrokerUnavailable, RabbitflowError
from rabbitflow.producer import Producer
from rabbitflow.settings import Settings
from tests.faults.conftest import WorkerFactory
from tests.faults.harness import PublishLog, publish_tracked, until
from tests.faults.nodes import Node
from tests.integration.worker.procs import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CANARY = f"canary-{uuid.uuid4().hex}"


@pytest.fixture
def canary_user(live_node: Node, node_vhost: str) -> str:
    user = f"canary{uuid.uuid4().hex[:6]}"
    live_node.ctl("add_user", user, CANARY)
    live_node.ctl("set_permissions", "-p", node_vhost, user, ".*", ".*", ".*")
    yield user
    live_node.ctl("delete_user", user)


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


async def test_credential_canary_appears_nowhere(
    workers: WorkerFactory,
    live_node: Node,
    node_vhost: str,
    canary_user: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = live_node.url(node_vhost, user=canary_user, password=CANARY)
    bad_vhost = live_node.url("no-such-vhost", user=canary_user, password=CANARY)
    dead_port = f"amqp://{canary_user}:{CANARY}@127.0.0.1:5679/"
    seen: list[str] = []
    with capture_logs() as logs:
        # Python API: settings, producer and errors, good and bad URLs.
        settings = Settings(url=f"{dead_port},{url}", connect_timeout=2)
        seen += [repr(settings), str(settings)]
        producer = Producer(settings=settings)
        seen += [repr(producer), repr(producer.link)]
        for wrong in (
            bad_vhost,
            dead_port,
            live_node.url(node_vhost, user=canary_user, password=CANARY + "x"),
        ):
            with pytest.raises(RabbitflowError) as info:
                await connect(wrong, timeout=3)
            seen += [str(info.value), repr(info.value)]
        # A worker whose connections are cut (logs the reasons), and the CLI failing.
        w = workers(
            url,
            HANDLER_PREFETCH="5",
            RABBITFLOW_URL=f"{dead_port},{url}",
            RABBITFLOW_CONNECT_TIMEOUT="2",
        )
        w.start()
        await until(lambda: "worker connected" in w.output(), timeout=30, message="up")
        log = PublishLog()
        await publish_tracked(url, range(20), log)
        await until(lambda: len(w.done()) == 20, timeout=30, message="handled")
        live_node.ctl("close_all_connections", "-p", node_vhost, "canary test")
        await until(lambda: "reconnected" in w.output(), timeout=30, message="reconnect")
        assert w.stop() == 0
        seen.append(w.output())
        env = {**w.env}
        seen.append(_cli("publish", "", "jobs", "{}", "--url", bad_vhost, env=env))
        seen.append(_cli("publish", "", "jobs", "{}", "--url", dead_port, env=env))
        seen.append(_cli("publish", "", "no-such-queue", "{}", env=env))
        seen.append(
            _cli("run", "tests.integration.worker.apps.ledger:app", "--url", bad_vhost, env=env)
        )
        await producer.close()
    seen += [repr(e) for e in logs]
    seen.append(caplog.text)
    leaks = [s for s in seen if CANARY in s]
    assert not leaks, leaks[0][:500]
    assert any("***" in s for s in seen)  # the URLs were shown, masked


async def test_amqps_verifies_the_certificate_by_default(live_node: Node, node_vhost: str) -> None:
    url = f"amqps://guest:guest@127.0.0.1:{live_node.tls_port}/{node_vhost}"
    with pytest.raises(BrokerUnavailable, match=r"(?i)certificate"):
        await connect(url, timeout=5)


async def test_amqps_with_the_test_ca_connects(live_node: Node, node_vhost: str) -> None:
    ca = live_node.dir / "tls" / "ca.pem"
    connection = await connect(
        f"amqps://guest:guest@127.0.0.1:{live_node.tls_port}/{node_vhost}?cafile={ca}", timeout=5
    )
    await connection.close()


async def test_turning_verification_off_is_explicit_and_warns(
    live_node: Node, node_vhost: str
) -> None:
    url = f"amqps://guest:guest@127.0.0.1:{live_node.tls_port}/{node_vhost}"
    assert Settings(url=url).tls_verify is True
    settings = Settings(url=url, tls_verify=False)
    with capture_logs() as logs:
        connection = await connect(settings.urls, timeout=5, tls_verify=settings.tls_verify)
        await connection.close()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert any("verification is off" in e["event"] for e in warnings)
