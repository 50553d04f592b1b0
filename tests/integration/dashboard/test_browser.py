"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
what an on-call engineer sees and clicks."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from rabbitflow.testing import run_app
from tests.integration.dashboard.helpers import Served, dead_letters, depth, wait_depth
from workers import orders as shop

pytestmark = [pytest.mark.broker, pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("RABBITFLOW_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
ORDER = {
    "customer": "alan",
    "amount": "40.00",
    "card": "4000-declined",
    "lines": [{"sku": "chair", "quantity": 1}],
}
EXCHANGES = ["orders (topic)", "orders.unrouted (fanout)", "notifications (fanout)"]
QUEUES = [
    "orders.unrouted",
    "inventory.reserve",
    "inventory.reserve.retry.500ms",
    "inventory.reserve.dlq",
    "payments.charge",
    "payments.charge.retry.200ms",
    "payments.charge.retry.400ms",
    "payments.charge.retry.800ms",
    "payments.charge.retry.1s",
    "payments.charge.dlq",
    "shipping.prepare",
    "shipping.prepare.retry.1s",
    "shipping.prepare.retry.2s",
    "shipping.prepare.dlq",
    "notify.email",
    "notify.sms",
    "analytics.events",
]


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make browser-deps)")
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(chromium: Browser, url: str) -> Page:
    page = await chromium.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(10_000)
    response = await page.goto(url)
    assert response is not None and response.status == 200
    await expect(page.locator("#updated")).to_contain_text("updated")
    return page


def queue_row(page: Page, queue: str) -> Any:
    return page.locator(f'#queues tr[data-queue="{queue}"]')


async def test_the_page_shows_every_exchange_and_queue_and_counts_change_within_4s(
    chromium: Browser, dashboard: Callable[..., Served], publisher: Any
) -> None:
    served = dashboard()
    page = await open_page(chromium, served.url)
    for exchange in EXCHANGES:
        await expect(page.locator(f'g.exchange[data-exchange="{exchange}"]')).to_be_visible()
    for queue in QUEUES:
        await expect(page.locator(f'g.queue[data-queue="{queue}"]')).to_be_visible()
    await expect(queue_row(page, "payments.charge").locator("td.ready")).to_have_text("0")

    orders = await publisher.get_exchange("orders")
    for i in range(3):
        await orders.publish(
            aio_pika.Message(json.dumps(ORDER | {"order_id": f"B-{i}"}).encode()),
            routing_key="order.placed",
        )
    # Polled every 2 s: the new figures are on screen within 4 s, without a reload.
    await expect(queue_row(page, "payments.charge").locator("td.ready")).to_have_text(
        "3", timeout=4000
    )
    await expect(page.locator('g[data-queue="payments.charge"] .figs')).to_contain_text(
        "ready 3", timeout=4000
    )
    await expect(queue_row(page, "notify.email").locator("td.ready")).to_have_text("3")


async def test_a_workers_dead_letter_shows_its_error_and_is_replayed_after_confirming(
    chromium: Browser, dashboard: Callable[..., Served], publisher: Any, amqp_url: str
) -> None:
    served = dashboard()
    page = await open_page(chromium, served.url)
    async with run_app(shop.app, amqp_url) as harness:
        await harness.publish("orders", "order.placed", ORDER | {"order_id": "A-1004"})
        await wait_depth(publisher, "payments.charge.dlq", 1)
        await harness.wait_idle()
    await wait_depth(publisher, "payments.charge", 0)

    # It stands out: the row and the graph node turn red.
    await expect(queue_row(page, "payments.charge")).to_have_class("has-dead", timeout=4000)
    await expect(page.locator('g.queue[data-queue="payments.charge"]')).to_have_class(
        "node queue role-declared has-dead"
    )
    await queue_row(page, "payments.charge").locator("button.dead-link").click()
    letter = page.locator("#letters tr.letter")
    await expect(letter).to_have_count(1)
    await expect(letter.locator("td.error")).to_contain_text("card declined by the issuer")
    await expect(letter.locator("td.n").last).to_have_text("1")  # attempt
    await letter.get_by_role("button", name="details").click()
    await expect(page.locator("#letters tr.details pre.body")).to_contain_text("A-1004")
    await page.locator("#letters button.show-traceback").click()
    await expect(page.locator("#letters pre.traceback")).to_contain_text("Traceback")

    # Cancelling does nothing.
    await letter.get_by_role("button", name="replay").click()
    await expect(page.locator("#confirm")).to_be_visible()
    await expect(page.locator("#confirm-text")).to_contain_text("to payments.charge")
    await page.locator("#confirm-cancel").click()
    await expect(page.locator("#report")).to_have_text("cancelled: nothing was done")
    assert await depth(publisher, "payments.charge.dlq") == 1

    await letter.get_by_role("button", name="replay").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#report")).to_have_text(
        "moved 1 dead letter back to payments.charge"
    )
    assert await depth(publisher, "payments.charge.dlq") == 0
    assert (
        await depth(publisher, "payments.charge") == 1
    )  # back in its queue, checked on the broker
    await expect(page.locator("#letters td.empty")).to_have_text("no dead letters")
    await expect(queue_row(page, "payments.charge").locator("td.dead-letters")).to_have_text(
        "0", timeout=4000
    )
    await expect(queue_row(page, "payments.charge")).not_to_have_class("has-dead")


async def test_replay_all_matching_a_filter_and_purge_ask_first(
    chromium: Browser, dashboard: Callable[..., Served], publisher: Any
) -> None:
    await dead_letters(
        publisher, "payments.charge", ["GatewayTimeout: a", "ValueError: b", "GatewayTimeout: c"]
    )
    await wait_depth(publisher, "payments.charge.dlq", 3)
    served = dashboard()
    page = await open_page(chromium, served.url)
    await page.locator('g.queue[data-queue="payments.charge.dlq"]').click()  # from the graph
    await expect(page.locator("#letters tr.letter")).to_have_count(3)

    await page.locator("#filter-error").fill("GatewayTimeout")
    await page.get_by_role("button", name="filter").click()
    await expect(page.locator("#letters tr.letter")).to_have_count(2)
    await page.locator("#replay-matching").click()
    await expect(page.locator("#confirm-text")).to_contain_text("Replay all 2 dead letters")
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#report")).to_have_text(
        "moved 2 dead letters back to payments.charge"
    )
    assert await depth(publisher, "payments.charge") == 2

    await page.locator("#filter-error").fill("")
    await page.get_by_role("button", name="filter").click()
    await expect(page.locator("#letters tr.letter")).to_have_count(1)
    await page.locator("#purge").click()
    await expect(page.locator("#confirm-text")).to_contain_text("cannot be undone")
    await page.locator("#confirm-cancel").click()
    assert await depth(publisher, "payments.charge.dlq") == 1  # asked first
    await page.locator("#purge").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#report")).to_have_text(
        "purged 1 dead letter from payments.charge.dlq"
    )
    assert await depth(publisher, "payments.charge.dlq") == 0


async def test_read_only_has_no_buttons_to_act(
    chromium: Browser, dashboard: Callable[..., Served], publisher: Any
) -> None:
    await dead_letters(publisher, "payments.charge", ["ValueError: b"])
    await wait_depth(publisher, "payments.charge.dlq", 1)
    served = dashboard(read_only=True)
    page = await open_page(chromium, served.url)
    await queue_row(page, "payments.charge").locator("button.dead-link").click()
    await expect(page.locator("#letters tr.letter td.error")).to_have_text("ValueError: b")
    await expect(page.get_by_role("button", name="replay")).to_have_count(0)
    await expect(page.get_by_role("button", name="purge")).to_have_count(0)
    await expect(page.locator("#letters input[type=checkbox]")).to_have_count(0)
    await expect(page.locator("dialog")).to_have_count(0)
    await expect(page.locator("header .badge")).to_have_text("read-only")


async def test_without_the_token_the_page_is_refused(
    chromium: Browser, dashboard: Callable[..., Served]
) -> None:
    token = uuid.uuid4().hex
    served = dashboard(token=token)
    page = await chromium.new_page()
    refused = await page.goto(served.url)
    assert refused is not None and refused.status == 401
    await expect(page.locator("body")).to_contain_text("needs its token")
    opened = await page.goto(f"{served.url}/?token={token}")
    assert opened is not None and opened.status == 200
    assert page.url == f"{served.url}/"  # the token left the address bar
    await expect(page.locator("#updated")).to_contain_text("updated")
    await expect(page.locator('g.queue[data-queue="payments.charge"]')).to_be_visible()
