"""docs/dashboard.png: the dashboard with the demo's dead letters, in headless Chromium.

Runs the order services (workers/orders.py) on a fresh vhost ``rabbitflow-dashboard``,
publishes the demo's orders (scripts/demo.py), waits for the dead letters, stops the
worker, leaves a small backlog, serves the dashboard and photographs it with
``payments.charge``'s dead letters open. Needs the local RabbitMQ, ``/usr/bin/chromium``
(make browser-deps) and the dev extra: ``.venv/bin/python scripts/dashboard_screenshot.py``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from playwright.async_api import async_playwright, expect

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from demo import ORDERS  # noqa: E402

from rabbitflow import Producer  # noqa: E402
from rabbitflow.dashboard.app import DashboardConfig, create_app  # noqa: E402
from rabbitflow.settings import Settings  # noqa: E402
from rabbitflow.testing import run_app  # noqa: E402
from rabbitflow.topology import load_topology  # noqa: E402
from workers import orders  # noqa: E402

VHOST = "rabbitflow-dashboard"
API = "http://127.0.0.1:15672/api"
URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
OUT = ROOT / "docs" / "dashboard.png"


def fresh_vhost() -> None:
    with httpx.Client(auth=("guest", "guest"), timeout=10) as api:
        api.delete(f"{API}/vhosts/{VHOST}")
        api.put(f"{API}/vhosts/{VHOST}").raise_for_status()
        api.put(
            f"{API}/permissions/{VHOST}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()


async def dead_letters() -> None:
    async with run_app(orders.app, URL) as harness:
        for order in ORDERS:
            await harness.publish("orders", "order.placed", order)
        await harness.wait_idle(timeout=30)
    # A backlog nobody consumes now, so the figures are not all zero.
    async with Producer(URL) as producer:
        for i in range(7):
            await producer.publish(
                "orders",
                "order.placed",
                {**ORDERS[0], "order_id": f"B-{2000 + i}"},
            )


async def photograph(url: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = await browser.new_page(viewport={"width": 1600, "height": 1500})
        await page.goto(url)
        await expect(page.locator("#updated")).to_contain_text("updated")
        await page.locator('#queues tr[data-queue="payments.charge"] button.dead-link').click()
        letters = page.locator("#letters tr.letter")
        await expect(letters.first).to_be_visible()
        await letters.first.get_by_role("button", name="details").click()
        await page.wait_for_timeout(2500)
        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(path=str(OUT), full_page=True)
        await browser.close()


def main() -> None:
    fresh_vhost()
    asyncio.run(dead_letters())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(url=URL, management_url="http://127.0.0.1:15672")
    app = create_app(DashboardConfig(settings, load_topology([ROOT / "topologies/orders.yaml"])))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        asyncio.run(photograph(f"http://127.0.0.1:{port}/"))
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
