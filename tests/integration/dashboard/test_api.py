"""The dashboard's JSON API against the real broker: status, dead letters, replay, purge,
authentication, CSRF, read-only, and no password anywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from rabbitflow.testing import run_app
from tests.conftest import AUTH, MANAGEMENT
from tests.integration.dashboard.helpers import Served, dead_letters, depth, wait_depth
from workers import orders as shop

pytestmark = pytest.mark.broker

GOOD = {
    "customer": "ada",
    "amount": "25.00",
    "card": "4111-ok",
    "lines": [{"sku": "book", "quantity": 1}],
}


def csrf_of(page: str) -> str:
    match = re.search(r'name="rabbitflow-csrf" content="([^"]+)"', page)
    assert match, "the page carries its CSRF token"
    return match.group(1)


def action_headers(served: Served, csrf: str) -> dict[str, str]:
    return {"X-Rabbitflow-CSRF": csrf, "Origin": served.url, "Content-Type": "application/json"}


@asynccontextmanager
async def browser(served: Served) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client that loaded the page (no token configured) and its CSRF token."""
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        page = await client.get("/")
        assert page.status_code == 200
        yield client, csrf_of(page.text)


async def test_status_shows_every_queue_with_exact_ready_counts_at_once(
    dashboard: Callable[..., Served], publisher: Any, amqp_url: str
) -> None:
    served = dashboard()
    orders = await publisher.get_exchange("orders")
    import aio_pika

    for i in range(3):
        await orders.publish(
            aio_pika.Message(json.dumps(GOOD | {"order_id": f"S-{i}"}).encode()),
            routing_key="order.placed",
        )
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        started = time.monotonic()
        status = (await client.get("/api/status")).json()
        elapsed = time.monotonic() - started
    rows = {r["queue"]: r for r in status["queues"]}
    assert set(rows) == {
        "orders.unrouted",
        "inventory.reserve",
        "payments.charge",
        "shipping.prepare",
        "notify.email",
        "notify.sms",
        "analytics.events",
    }
    # Read by passive declare: exact right after publishing (the management API lags 5 s).
    assert rows["payments.charge"]["ready"] == 3
    assert rows["inventory.reserve"]["ready"] == 3
    assert rows["notify.email"]["ready"] == 3
    assert rows["shipping.prepare"]["ready"] == 0
    assert rows["payments.charge"]["type"] == "quorum"
    assert rows["payments.charge"]["dead_letter_queue"] == "payments.charge.dlq"
    assert rows["payments.charge"]["dead_letters"] == 0
    assert rows["payments.charge"]["has_dead_letters"] is True
    assert rows["notify.email"]["has_dead_letters"] is False
    for key in ("unacked", "consumers", "publish_rate", "deliver_rate", "retrying"):
        assert key in rows["payments.charge"]
    # Retry and dead-letter queues have their own figures for the graph.
    assert status["depths"]["payments.charge.retry.200ms"]["ready"] == 0
    assert status["depths"]["payments.charge.dlq"]["ready"] == 0
    assert status["source"] == "management"
    print(f"status answered in {elapsed * 1000:.0f} ms")


async def test_the_page_draws_every_exchange_and_queue_and_masks_the_broker_url(
    dashboard: Callable[..., Served], amqp_url: str
) -> None:
    served = dashboard()
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        page = (await client.get("/")).text
        script = await client.get("/static/dashboard.js")
    for exchange in ("orders (topic)", "orders.unrouted (fanout)", "notifications (fanout)"):
        assert f'data-exchange="{exchange}"' in page
    for queue in (
        "payments.charge",
        "payments.charge.retry.1s",
        "payments.charge.dlq",
        "inventory.reserve.dlq",
        "notify.sms",
    ):
        assert f'data-queue="{queue}"' in page
    assert "guest:***@" in page and "guest:guest" not in page
    assert script.status_code == 200 and "api/status" in script.text
    assert "content-security-policy" in {k.lower() for k in script.headers}


async def test_a_real_workers_dead_letters_are_listed_with_their_error_without_consuming(
    dashboard: Callable[..., Served], amqp_url: str, publisher: Any
) -> None:
    served = dashboard()
    async with run_app(shop.app, amqp_url) as harness:
        await harness.publish(
            "orders", "order.placed", GOOD | {"order_id": "D-1", "card": "4-declined"}
        )
        await harness.publish(
            "orders",
            "order.placed",
            GOOD | {"order_id": "D-2", "lines": [{"sku": "SOLD-OUT", "quantity": 1}]},
        )
        await wait_depth(publisher, "payments.charge.dlq", 1)
        await wait_depth(publisher, "inventory.reserve.dlq", 1)  # after 3 retries of 500 ms
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        payments = (
            await client.get("/api/dead-letters", params={"queue": "payments.charge"})
        ).json()
        stock = (
            await client.get("/api/dead-letters", params={"queue": "inventory.reserve"})
        ).json()
        (row,) = payments["rows"]
        assert row["error"].endswith("card declined by the issuer")
        assert row["attempt"] == 1
        assert row["failed_at"]
        assert (row["exchange"], row["routing_key"]) == ("orders", "order.placed")
        assert json.loads(row["body"])["order_id"] == "D-1"
        assert row["headers"]["x-rabbitflow-queue"] == "payments.charge"
        (late,) = stock["rows"]
        assert "OutOfStock" in late["error"] and "SOLD-OUT" in late["error"]
        assert late["attempt"] == 4
        assert late["has_traceback"] and "x-rabbitflow-traceback" not in late["headers"]
        tb = await client.get(
            "/api/traceback", params={"queue": "inventory.reserve", "key": late["key"]}
        )
        assert "Traceback" in tb.json()["traceback"] and "OutOfStock" in tb.json()["traceback"]
    assert await depth(publisher, "payments.charge.dlq") == 1  # listing consumed nothing
    assert await depth(publisher, "inventory.reserve.dlq") == 1


async def test_replay_one_then_a_selection_then_all_matching_a_filter(
    dashboard: Callable[..., Served], publisher: Any
) -> None:
    errors = ["GatewayTimeout: slow", "ValueError: bad", "GatewayTimeout: slower", "KeyError: x"]
    ids = await dead_letters(publisher, "payments.charge", [*errors, "ValueError: worse"])
    await wait_depth(publisher, "payments.charge.dlq", 5)
    served = dashboard()
    async with browser(served) as (client, csrf):
        headers = action_headers(served, csrf)
        one = await client.post(
            "/api/replay", json={"queue": "payments.charge", "keys": [ids[3]]}, headers=headers
        )
        assert one.status_code == 200, one.text
        assert one.json()["moved"] == 1
        assert one.json()["message"] == "moved 1 dead letter back to payments.charge"
        assert await depth(publisher, "payments.charge") == 1
        assert await depth(publisher, "payments.charge.dlq") == 4

        matching = await client.get(
            "/api/dead-letters", params={"queue": "payments.charge", "error": "gatewaytimeout"}
        )
        assert [r["message_id"] for r in matching.json()["rows"]] == [ids[0], ids[2]]
        assert matching.json()["matching"] == 2 and matching.json()["total"] == 4
        by_header = await client.get(
            "/api/dead-letters", params={"queue": "payments.charge", "header": "tenant=t0"}
        )
        assert [r["message_id"] for r in by_header.json()["rows"]] == [ids[0], ids[2], ids[4]]

        moved = await client.post(
            "/api/replay",
            json={"queue": "payments.charge", "all": True, "error": "GatewayTimeout"},
            headers=headers,
        )
        assert moved.json()["moved"] == 2 and moved.json()["skipped"] == 2
        selection = await client.post(
            "/api/replay",
            json={"queue": "payments.charge", "keys": [ids[1], ids[4]]},
            headers=headers,
        )
        assert selection.json()["moved"] == 2
        left = (await client.get("/api/dead-letters", params={"queue": "payments.charge"})).json()
        assert left["total"] == 0
    assert await depth(publisher, "payments.charge") == 5
    work = await publisher.get_queue("payments.charge")
    replayed = []
    while (message := await work.get(fail=False, timeout=5)) is not None:
        await message.ack()
        replayed.append(message)
    assert sorted(m.message_id for m in replayed) == sorted(ids)
    assert all("x-rabbitflow-replayed-at" in m.headers for m in replayed)
    assert all("x-rabbitflow-attempt" not in m.headers for m in replayed)


async def test_purge_drops_the_dead_letters_and_says_how_many(
    dashboard: Callable[..., Served], publisher: Any
) -> None:
    await dead_letters(publisher, "payments.charge", ["E: 1", "E: 2", "E: 3"])
    await wait_depth(publisher, "payments.charge.dlq", 3)
    served = dashboard()
    async with browser(served) as (client, csrf):
        response = await client.post(
            "/api/purge", json={"queue": "payments.charge"}, headers=action_headers(served, csrf)
        )
    assert response.json() == {
        "queue": "payments.charge",
        "purged": 3,
        "message": "purged 3 dead letters from payments.charge.dlq",
    }
    assert await depth(publisher, "payments.charge.dlq") == 0


async def test_ten_thousand_dead_letters_are_paged_from_one_walk_and_left_in_order(
    dashboard: Callable[..., Served], publisher: Any
) -> None:
    n = 10_000
    ids = await dead_letters(publisher, "payments.charge", [f"E: {i}" for i in range(n)])
    await wait_depth(publisher, "payments.charge.dlq", n)
    served = dashboard()
    book = served.app.state.book
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        started = time.monotonic()
        first = (await client.get("/api/dead-letters", params={"queue": "payments.charge"})).json()
        first_s = time.monotonic() - started
        started = time.monotonic()
        last = (
            await client.get(
                "/api/dead-letters",
                params={"queue": "payments.charge", "offset": n - 50, "limit": 50},
            )
        ).json()
        last_s = time.monotonic() - started
        assert book.walks == 1  # the second page came from the snapshot
        assert first["total"] == n and len(first["rows"]) == 50
        assert [r["message_id"] for r in first["rows"]] == ids[:50]
        assert [r["position"] for r in last["rows"]] == list(range(n - 49, n + 1))
        assert [r["message_id"] for r in last["rows"]] == ids[-50:]
        assert await depth(publisher, "payments.charge.dlq") == n
        book.forget()
        again = (
            await client.get("/api/dead-letters", params={"queue": "payments.charge", "limit": 500})
        ).json()
        assert [r["message_id"] for r in again["rows"]] == ids[:500]  # order kept
    print(
        f"10,000 dead letters: first page {first_s:.2f}s (walk held them "
        f"{first['read_seconds']:.2f}s), page 200 {last_s * 1000:.0f} ms from the snapshot"
    )
    assert first["read_seconds"] < 20


async def test_a_token_is_required_as_bearer_or_once_in_the_url_which_sets_a_cookie(
    dashboard: Callable[..., Served],
) -> None:
    token = uuid.uuid4().hex
    served = dashboard(token=token)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as anonymous:
        for path in ("/", "/api/status", "/static/dashboard.js", "/api/dead-letters?queue=x"):
            assert (await anonymous.get(path)).status_code == 401, path
        assert (await anonymous.get("/?token=wrong")).status_code == 401
        wrong = await anonymous.get("/api/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and token not in wrong.text
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as api:
        ok = await api.get("/api/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as browser_:
        first = await browser_.get(f"/?token={token}", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert token not in first.headers["set-cookie"]
        page = await browser_.get("/")
        assert page.status_code == 200 and token not in page.text
        assert (await browser_.get("/api/status")).status_code == 200


async def test_actions_need_the_sessions_csrf_header_and_our_origin(
    dashboard: Callable[..., Served], publisher: Any
) -> None:
    await dead_letters(publisher, "payments.charge", ["E: 1"])
    await wait_depth(publisher, "payments.charge.dlq", 1)
    token = uuid.uuid4().hex
    served = dashboard(token=token)
    body = {"queue": "payments.charge"}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        csrf = csrf_of((await client.get(f"/?token={token}", follow_redirects=True)).text)
        json_only = {"Content-Type": "application/json"}
        no_header = await client.post("/api/purge", json=body, headers={"Origin": served.url})
        assert no_header.status_code == 403 and "csrf" in no_header.json()["error"]
        wrong = await client.post(
            "/api/purge", json=body, headers={"X-Rabbitflow-CSRF": "x", "Origin": served.url}
        )
        assert wrong.status_code == 403
        evil = await client.post(
            "/api/purge",
            json=body,
            headers={"X-Rabbitflow-CSRF": csrf, "Origin": "http://evil.example"} | json_only,
        )
        assert evil.status_code == 403 and "cross-site" in evil.json()["error"]
        cross = await client.post(
            "/api/purge",
            json=body,
            headers={"X-Rabbitflow-CSRF": csrf, "Sec-Fetch-Site": "cross-site"} | json_only,
        )
        assert cross.status_code == 403
        assert (await client.get("/api/purge")).status_code == 405  # actions are POSTs
        assert await depth(publisher, "payments.charge.dlq") == 1
        done = await client.post("/api/purge", json=body, headers=action_headers(served, csrf))
        assert done.status_code == 200 and done.json()["purged"] == 1
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as api:
        # A bearer token is no ambient browser credential: no CSRF token needed.
        bearer = await api.post(
            "/api/purge", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert bearer.status_code == 200 and bearer.json()["purged"] == 0


async def test_without_a_token_actions_still_need_the_pages_csrf_token(
    dashboard: Callable[..., Served],
) -> None:
    served = dashboard()
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        refused = await client.post("/api/purge", json={"queue": "payments.charge"})
        assert refused.status_code == 403
        rebinding = await client.get("/", headers={"Host": "attacker.example:8080"})
        assert rebinding.status_code == 400  # bound to loopback: loopback names only


async def test_read_only_has_no_actions_and_its_endpoints_refuse(
    dashboard: Callable[..., Served], publisher: Any
) -> None:
    ids = await dead_letters(publisher, "payments.charge", ["E: 1", "E: 2"])
    await wait_depth(publisher, "payments.charge.dlq", 2)
    served = dashboard(read_only=True)
    async with browser(served) as (client, csrf):
        page = (await client.get("/")).text
        assert 'id="purge"' not in page and 'id="replay-matching"' not in page
        assert '<dialog id="confirm">' not in page and "read-only" in page
        headers = action_headers(served, csrf)
        for path, body in (
            ("/api/replay", {"queue": "payments.charge", "all": True}),
            ("/api/replay", {"queue": "payments.charge", "keys": ids}),
            ("/api/purge", {"queue": "payments.charge"}),
        ):
            refused = await client.post(path, json=body, headers=headers)
            assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        listed = await client.get("/api/dead-letters", params={"queue": "payments.charge"})
        assert listed.json()["total"] == 2  # looking is still allowed
    assert await depth(publisher, "payments.charge.dlq") == 2


async def test_bad_requests_get_one_line_errors(dashboard: Callable[..., Served]) -> None:
    served = dashboard()
    async with browser(served) as (client, csrf):
        unknown = await client.get("/api/dead-letters", params={"queue": "notify.email"})
        assert unknown.status_code == 404 and "keeps no dead letters" in unknown.json()["error"]
        bad_offset = await client.get(
            "/api/dead-letters", params={"queue": "payments.charge", "offset": "x"}
        )
        assert bad_offset.status_code == 400
        bad_header = await client.get(
            "/api/dead-letters", params={"queue": "payments.charge", "header": "nothing"}
        )
        assert bad_header.status_code == 400 and "NAME=PATTERN" in bad_header.json()["error"]
        vague = await client.post(
            "/api/replay", json={"queue": "payments.charge"}, headers=action_headers(served, csrf)
        )
        assert vague.status_code == 400


async def test_no_page_or_response_contains_the_brokers_password(
    dashboard: Callable[..., Served], vhost: str, publisher: Any
) -> None:
    user, password = f"rf-dash-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=MANAGEMENT, auth=AUTH, timeout=10) as api:
        created = await api.put(f"/users/{user}", json={"password": password, "tags": "management"})
        created.raise_for_status()
        allowed = await api.put(
            f"/permissions/{vhost}/{user}", json={"configure": ".*", "write": ".*", "read": ".*"}
        )
        allowed.raise_for_status()
    try:
        await dead_letters(publisher, "payments.charge", ["E: 1"])
        await wait_depth(publisher, "payments.charge.dlq", 1)
        served = dashboard(url=f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}")
        async with browser(served) as (client, csrf):
            bodies = [
                (await client.get("/")).text,
                (await client.get("/api/status")).text,
                (await client.get("/api/dead-letters", params={"queue": "payments.charge"})).text,
                (await client.get("/api/dead-letters", params={"queue": "nope"})).text,
                (
                    await client.post(
                        "/api/replay",
                        json={"queue": "payments.charge", "all": True},
                        headers=action_headers(served, csrf),
                    )
                ).text,
            ]
        assert f"{user}:***@" in bodies[0]
        for body in bodies:
            assert password not in body
    finally:
        async with httpx.AsyncClient(base_url=MANAGEMENT, auth=AUTH, timeout=10) as api:
            await api.delete(f"/users/{user}")


async def test_without_files_it_shows_the_live_vhost_read_back_as_a_topology(
    dashboard: Callable[..., Served], publisher: Any
) -> None:
    await dead_letters(publisher, "payments.charge", ["E: live"])
    await wait_depth(publisher, "payments.charge.dlq", 1)
    served = dashboard(live=True)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        page = (await client.get("/")).text
        status = (await client.get("/api/status")).json()
        listed = (await client.get("/api/dead-letters", params={"queue": "payments.charge"})).json()
    assert "topology from live vhost" in page
    assert 'data-queue="payments.charge.retry.200ms"' in page
    rows = {r["queue"]: r for r in status["queues"]}
    assert "payments.charge.dlq" not in rows  # shown on its work queue's row
    assert rows["payments.charge"]["dead_letters"] == 1
    assert [r["error"] for r in listed["rows"]] == ["E: live"]


def test_the_command_fails_in_one_line_when_the_vhost_does_not_exist() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rabbitflow", "dashboard", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "RABBITFLOW_URL": "amqp://guest:guest@127.0.0.1:5672/rf-no-such-vhost",
            "RABBITFLOW_MANAGEMENT_URL": "http://127.0.0.1:15672",
        },
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and "rf-no-such-vhost" in line and "guest:guest" not in line
