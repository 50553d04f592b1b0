"""Composing an application (DESIGN.md §7) on the real broker: routers from two modules,
a lifespan and ``app.state``, and a lifespan that fails in ``rabbitflow run``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rabbitflow import App, HandlerError, Router
from rabbitflow.errors import LifespanError
from rabbitflow.topology import load_text
from tests.helpers import consumer_count_of, message_count, wait_for
from tests.integration.worker.apps.composed import app as composed
from tests.integration.worker.apps.composed import emails, payments

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[3]
APPS = "tests.integration.worker.apps"
TOPOLOGY = """
version: 1
exchanges:
  shop: {type: topic}
queues:
  payments.charge:
    bind: [{exchange: shop, routing_key: "order.placed"}]
  emails.send:
    bind: [{exchange: shop, routing_key: "email.*"}]
"""


@pytest.fixture
def topology_file(tmp_path: Path) -> str:
    path = tmp_path / "shop.yaml"
    path.write_text(TOPOLOGY)
    return str(path)


async def test_routers_from_two_modules_consume_their_queues(
    amqp_url: str, topology_file: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.txt"
    os.environ["EVENTS"] = str(events)
    payments.seen.clear()
    emails.seen.clear()
    try:
        app = composed.make_app(topology_file, url=amqp_url)
        assert sorted(app.handlers) == ["emails.send", "payments.charge"]
        async with app:
            assert app.state.db == {"open": True}
            assert events.read_text().splitlines() == ["entered"]
            await app.publish("shop", "order.placed", {"id": 1})
            await app.publish("shop", "email.welcome", {"to": "a@example.com"})
            await wait_for(lambda: bool(payments.seen and emails.seen), timeout=10)
        assert events.read_text().splitlines() == ["entered", "exited"]
        assert app.state.db == {"open": False}
    finally:
        del os.environ["EVENTS"]
    assert payments.seen == [("payments.charge", {"id": 1})]
    assert emails.seen == [{"to": "a@example.com"}]


async def test_lifespan_exits_after_in_flight_work_settled(amqp_url: str) -> None:
    steps: list[str] = []
    release = asyncio.Event()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: App):  # type: ignore[no-untyped-def]
        steps.append("enter")
        yield
        steps.append("exit")

    app = App(load_text(TOPOLOGY), url=amqp_url, lifespan=lifespan)

    @app.handler("payments.charge")
    async def slow(order: dict[str, Any]) -> None:
        steps.append("handler started")
        await release.wait()
        steps.append("handler done")

    await app.start()
    await app.publish("shop", "order.placed", {"id": 2})
    await wait_for(lambda: "handler started" in steps)
    stopping = asyncio.create_task(app.stop(5))
    await asyncio.sleep(0.1)
    assert "exit" not in steps
    release.set()
    await stopping
    assert steps == ["enter", "handler started", "handler done", "exit"]


async def test_a_failing_lifespan_starts_no_consumer(amqp_url: str, channel: Any) -> None:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: App):  # type: ignore[no-untyped-def]
        raise ConnectionRefusedError("db down")
        yield

    app = App(load_text(TOPOLOGY), url=amqp_url, lifespan=lifespan)

    @app.handler("payments.charge")
    async def charge(order: dict[str, Any]) -> None:
        raise AssertionError("must not run")

    with pytest.raises(LifespanError, match="ConnectionRefusedError: db down"):
        await app.start()
    assert app.worker is None
    # Declared (the lifespan runs after declaring), never consumed.
    import aio_pika

    await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key="payments.charge")
    await asyncio.sleep(0.2)
    assert await message_count(channel, "payments.charge") == 1
    assert await consumer_count_of(amqp_url, "payments.charge") == 0
    await app.stop()


def test_rabbitflow_run_with_a_failing_lifespan_exits_1_with_one_line(
    amqp_url: str, topology_file: str
) -> None:
    env = {
        **os.environ,
        "TOPOLOGY": topology_file,
        "LIFESPAN_FAIL": "1",
        "RABBITFLOW_URL": amqp_url,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rabbitflow",
            "run",
            "tests.integration.worker.apps.composed.app:app",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: lifespan lifespan failed on start: DatabaseDown: cannot reach db at "
        "127.0.0.1:1; no consumer was started"
    ]
    assert "Traceback" not in done.stdout


async def test_include_router_checks_queues_and_duplicates(amqp_url: str) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    router = Router()

    @router.handler("payments.chrage")
    async def typo(order: dict[str, Any]) -> None: ...

    with pytest.raises(HandlerError, match=r"no queue 'payments\.chrage'.*did you mean"):
        app.include_router(router)
    assert app.handlers == {}
    app.include_router(payments.router)
    with pytest.raises(HandlerError, match=r"'payments\.charge' has a handler already: charge"):
        app.include_router(payments.router)

    late = App(url=amqp_url)  # the topology comes later: checked at start
    late.include_router(router)
    with pytest.raises(HandlerError, match="did you mean"):
        late.use_topology(load_text(TOPOLOGY))
