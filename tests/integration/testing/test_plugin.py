"""The pytest plugin as a user sees it: a test file in a project of its own, run by
pytest in a subprocess, with rabbitflow's fixtures coming from the entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from rabbitflow.testing.plugin import DEFAULT_MANAGEMENT_URL

pytestmark = pytest.mark.broker

USER_TESTS = """
from pathlib import Path
from typing import Any

import pytest

from rabbitflow import App
from rabbitflow.testing import run_app

TOPOLOGY = Path(__file__).with_name("orders.yaml")
LOG = Path(__file__).with_name("vhosts.txt")


@pytest.fixture
def rabbitflow_topology():
    return str(TOPOLOGY)


def make_app() -> App:
    app = App(str(TOPOLOGY))

    @app.handler("charge")
    async def charge(order: dict[str, Any]) -> None:
        if order.get("fail"):
            raise RuntimeError("declined")

    return app


async def test_on_a_real_vhost(rabbitflow_vhost):
    with LOG.open("a") as log:
        log.write(rabbitflow_vhost.name + "\\n")
    async with run_app(make_app(), rabbitflow_vhost.url) as h:
        await h.publish("orders", "order.placed", {"fail": True})
        await h.wait_idle()
        assert [c.outcome for c in h.calls_of("charge")] == ["retry", "retry", "dead_letter"]


async def test_failing_still_deletes_its_vhost(rabbitflow_vhost):
    with LOG.open("a") as log:
        log.write(rabbitflow_vhost.name + "\\n")
    assert False, "on purpose"


async def test_in_memory(memory_url):
    async with run_app(make_app(), memory_url) as h:
        await h.publish("orders", "order.placed", {"fail": True})
        await h.wait_idle()
        assert len(await h.dead_letters("charge")) == 1
"""

MODULE_TESTS = """
from pathlib import Path

import aio_pika

RABBITFLOW_TOPOLOGY = str(Path(__file__).with_name("orders.yaml"))
LOG = Path(__file__).with_name("vhosts.txt")


async def _queue_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, passive=True)
        return True
    finally:
        await connection.close()


async def test_first(rabbitflow_module_vhost):
    with LOG.open("a") as log:
        log.write(rabbitflow_module_vhost.name + "\\n")
    assert await _queue_exists(rabbitflow_module_vhost.url, "charge.retry.20ms")


async def test_second_shares_the_vhost(rabbitflow_module_vhost):
    with LOG.open("a") as log:
        log.write(rabbitflow_module_vhost.name + "\\n")
"""

ORDERS = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  charge:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 2, delays: [20ms, 40ms]}
"""


def test_plugin_fixtures_in_a_users_project(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text(ORDERS)
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    (tmp_path / "test_module.py").write_text(textwrap.dedent(MODULE_TESTS))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 failed, 4 passed" in result.stdout, result.stdout + result.stderr
    assert "on purpose" in result.stdout
    names = (tmp_path / "vhosts.txt").read_text().split()
    assert len(names) == 4
    assert len(set(names)) == 3  # the module's two tests shared one vhost
    with httpx.Client(base_url=DEFAULT_MANAGEMENT_URL + "/api", auth=("guest", "guest")) as api:
        existing = {v["name"] for v in api.get("/vhosts").raise_for_status().json()}
    assert not set(names) & existing, "a test's vhost was left behind"
