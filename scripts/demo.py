"""The demo: run the order services against a fresh vhost, publish a batch of orders
(some failing transiently, some poison), and tell what happened to each.

Run through ``make demo``. Needs a local RabbitMQ with the management plugin.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from rabbitflow import Producer
from rabbitflow.amqp.connection import connect

ROOT = Path(__file__).resolve().parents[1]
VHOST = "rabbitflow-demo"
HOST = os.environ.get("DEMO_HOST", "127.0.0.1")
URL = f"amqp://guest:guest@{HOST}:5672/{VHOST}"
API = f"http://{HOST}:15672/api"
WORK_QUEUES = ["inventory.reserve", "payments.charge", "shipping.prepare"]
console = Console()

ORDERS: list[dict[str, Any]] = [
    {
        "order_id": "A-1001",
        "customer": "ada",
        "amount": "25.00",
        "card": "4111-ok",
        "lines": [{"sku": "book", "quantity": 1}],
    },
    {
        "order_id": "A-1002",
        "customer": "linus",
        "amount": "89.90",
        "card": "4111-ok",
        "lines": [{"sku": "lamp", "quantity": 2}],
    },
    {
        "order_id": "A-1003",
        "customer": "grace",
        "amount": "12.50",
        "card": "4000-flaky",
        "lines": [{"sku": "book", "quantity": 1}],
    },
    {
        "order_id": "A-1004",
        "customer": "alan",
        "amount": "40.00",
        "card": "4000-declined",
        "lines": [{"sku": "chair", "quantity": 1}],
    },
    {
        "order_id": "A-1005",
        "customer": "edsger",
        "amount": "0",
        "card": "4111-ok",
        "lines": [{"sku": "book", "quantity": 1}],
    },
    {
        "order_id": "A-1006",
        "customer": "barbara",
        "amount": "19.99",
        "card": "4111-ok",
        "lines": [{"sku": "SOLD-OUT", "quantity": 1}],
    },
    {"order_id": "A-1007", "customer": "ken"},  # malformed: fails validation
    {
        "order_id": "A-1008",
        "customer": "margaret",
        "amount": "64.00",
        "card": "4000-flaky",
        "lines": [{"sku": "lamp", "quantity": 1}],
    },
]
WHY = {
    "A-1003": "card gateway times out twice",
    "A-1004": "card declined (poison)",
    "A-1005": "amount 0 (poison)",
    "A-1006": "SKU out of stock",
    "A-1007": "malformed body",
    "A-1008": "card gateway times out twice",
}


def step(text: str) -> None:
    console.print(f"\n[bold]== {text}[/bold]")


def fresh_vhost() -> None:
    with httpx.Client(auth=("guest", "guest"), timeout=10) as api:
        api.delete(f"{API}/vhosts/{VHOST}")
        api.put(f"{API}/vhosts/{VHOST}").raise_for_status()
        api.put(
            f"{API}/permissions/{VHOST}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()


async def queue_depths(names: list[str]) -> dict[str, tuple[int, int]]:
    connection = await connect(URL)
    try:
        out = {}
        for name in names:
            channel = await connection.channel()
            q = await channel.declare_queue(name, passive=True)
            out[name] = (q.declaration_result.message_count, q.declaration_result.consumer_count)
            await channel.close()
        return out
    finally:
        await connection.close()


async def read_dead_letters(queue: str) -> list[tuple[str, dict[str, Any]]]:
    """Every dead letter of ``queue``, left in place (read, then requeued in order)."""
    connection = await connect(URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=0)
        dlq = await channel.declare_queue(f"{queue}.dlq", passive=True)
        letters, last = [], None
        while (m := await dlq.get(fail=False)) is not None:
            body = json.loads(m.body) if m.body.startswith(b"{") else {}
            letters.append((str(body.get("order_id", "?")), dict(m.headers or {})))
            last = m
        if last is not None:
            await last.nack(multiple=True, requeue=True)
        return letters
    finally:
        await connection.close()


def worker_events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


async def main() -> int:
    step(f"a fresh vhost {VHOST!r}; the worker declares topologies/orders.yaml there")
    fresh_vhost()
    log = ROOT / "build" / "demo" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "RABBITFLOW_URL": URL,
        "RABBITFLOW_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "rabbitflow", "run", "workers.orders:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                depths = await queue_depths(WORK_QUEUES)
                if all(consumers for _, consumers in depths.values()):
                    break
            except Exception:
                pass
            if worker.poll() is not None or time.monotonic() > deadline:
                console.print(log.read_text())
                console.print("[red]the worker did not start[/red]")
                return 1
            await asyncio.sleep(0.2)
        console.print(f"worker running (pid {worker.pid}): rabbitflow run workers.orders:app")

        step(
            f"publish {len(ORDERS)} orders to exchange 'orders' as order.placed, "
            "and one event nobody subscribes to"
        )
        async with Producer(URL) as producer:
            for order in ORDERS:
                await producer.publish(
                    "orders", "order.placed", order, message_id=order["order_id"]
                )
                note = WHY.get(order["order_id"], "")
                console.print(f"  {order['order_id']}  confirmed by the broker  {note}")
            await producer.publish("orders", "refund.requested", {"order_id": "A-1002"})
            console.print(
                "  refund.requested  matches no binding: the alternate exchange "
                "parks it in orders.unrouted"
            )

        step("let the workers run: retries wait in TTL delay queues, then come back")
        settle_deadline = time.monotonic() + 30
        retry_queues = [
            "inventory.reserve.retry.500ms",
            "payments.charge.retry.200ms",
            "payments.charge.retry.400ms",
        ]
        quiet_since = None
        while time.monotonic() < settle_deadline:
            depths = await queue_depths(WORK_QUEUES + retry_queues)
            busy = sum(ready for ready, _ in depths.values())
            quiet_since = (quiet_since or time.monotonic()) if busy == 0 else None
            if quiet_since and time.monotonic() - quiet_since > 1.5:
                break
            await asyncio.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=40)
    console.print(f"SIGTERM sent: the worker finished in-flight work and exited with {code}")

    report(
        worker_events(log),
        {q: await read_dead_letters(q) for q in ("inventory.reserve", "payments.charge")},
    )
    console.print(f"\nworker log (JSON lines): {log.relative_to(ROOT)}")
    return 0 if code == 0 else 1


def report(events: list[dict[str, Any]], dead: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
    step("what happened to each order")
    retries: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in events:
        if e.get("outcome") == "retry":
            retries[(str(e.get("message_id")), str(e.get("queue")))].append(
                f"{str(e.get('error', '')).split(':')[0]} → retry in {e.get('delay_ms')}ms"
            )
    captured = {e.get("order_id") for e in events if e.get("event") == "payment captured"}
    reserved = {e.get("order_id") for e in events if e.get("event") == "stock reserved"}
    shipped = {e.get("order_id") for e in events if e.get("event") == "shipment prepared"}
    dead_by = {(order, q): h for q, letters in dead.items() for order, h in letters}

    table = Table(show_lines=True)
    for column in ("order", "inventory.reserve", "payments.charge", "shipping.prepare"):
        table.add_column(column)
    for order in [o["order_id"] for o in ORDERS]:
        cells = []
        for queue, ok in (("inventory.reserve", reserved), ("payments.charge", captured)):
            lines = list(retries.get((order, queue), []))
            headers = dead_by.get((order, queue))
            if headers is not None:
                lines.append(
                    f"[red]dead-lettered[/red] on attempt "
                    f"{headers.get('x-rabbitflow-attempt')}: "
                    f"{headers.get('x-rabbitflow-error')}"
                )
            elif order in ok:
                lines.append(
                    "[green]processed[/green]" + (f" on attempt {len(lines) + 1}" if lines else "")
                )
            cells.append("\n".join(lines) or "-")
        cells.append("[green]shipped[/green]" if order in shipped else "-")
        table.add_row(order, *cells)
    console.print(table)
    total = sum(len(v) for v in dead.values())
    console.print(
        f"{total} dead letters wait in inventory.reserve.dlq and "
        "payments.charge.dlq with their error, traceback and attempt in the "
        "headers; `rabbitflow dlq list payments.charge` shows them and "
        "`rabbitflow dlq replay payments.charge` sends them back once fixed."
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
