"""The event-sourcing part of the demo: order events on a stream, the order-status
projection rebuilt from the first event, stopped, restarted (it resumes where it
stopped), and a replay of the history into a new queue.

Run through ``make demo`` (after scripts/demo.py). Needs a local RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rabbitflow import Producer, SQLiteOffsets

ROOT = Path(__file__).resolve().parents[1]
VHOST = "rabbitflow-demo-streams"
HOST = os.environ.get("DEMO_HOST", "127.0.0.1")
URL = f"amqp://guest:guest@{HOST}:5672/{VHOST}"
API = f"http://{HOST}:15672/api"
OUT = ROOT / "build" / "demo"
DB = OUT / "order-status.db"
EVENTS = [
    ("A-1001", "placed"),
    ("A-1002", "placed"),
    ("A-1001", "paid"),
    ("A-1003", "placed"),
    ("A-1002", "cancelled"),
    ("A-1001", "shipped"),
]
LATER = [("A-1003", "paid"), ("A-1001", "delivered"), ("A-1003", "shipped")]


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def fresh_vhost() -> None:
    with httpx.Client(auth=("guest", "guest"), timeout=10) as api:
        api.delete(f"{API}/vhosts/{VHOST}")
        api.put(f"{API}/vhosts/{VHOST}").raise_for_status()
        api.put(
            f"{API}/permissions/{VHOST}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()


def env() -> dict[str, str]:
    return {
        **os.environ,
        "RABBITFLOW_URL": URL,
        "RABBITFLOW_LOG_FORMAT": "json",
        "ORDER_STATUS_DB": str(DB),
        "PYTHONPATH": str(ROOT),
    }


def rabbitflow(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def publish(events: list[tuple[str, str]]) -> None:
    async with Producer(URL) as producer:
        for order_id, status in events:
            await producer.publish(
                "orders.log", f"order.{status}", {"order_id": order_id, "status": status}
            )


async def position() -> int | None:
    store = SQLiteOffsets(DB)
    try:
        return await store.load("order-status-v1", "orders.events")
    finally:
        await store.close()


async def run_projection(until: int, log: Path) -> list[dict[str, object]]:
    """Run the projection worker until its stored position is ``until``, stop it with
    SIGTERM; the log events it wrote."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "rabbitflow", "run", "workers.order_status:app"],
            cwd=ROOT,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while await position() != until:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the projection did not reach offset {until}; see {log}")
            await asyncio.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=40)
    return read_log(log)


def read_log(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def fresh_files() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)


def show(events: list[dict[str, object]]) -> None:
    for e in events:
        if e.get("event") == "stream consumer attaching":
            where = "the first event" if e.get("position") is None else f"offset {e['start']}"
            print(f"  attached at {where} (stored position: {e.get('position')})")
        if e.get("event") == "order status":
            print(f"  offset {e['offset']}: {e['order_id']} -> {e['status']}")


async def main() -> int:
    step(f"a fresh vhost {VHOST!r}: topologies/order-events.yaml (stream orders.events)")
    fresh_vhost()
    fresh_files()
    rabbitflow("declare", "topologies/order-events.yaml")
    await publish(EVENTS)
    print(f"  {len(EVENTS)} order events published to orders.log, kept by the stream")

    step("the order-status projection, rebuilt from the first event (then SIGTERM)")
    show(await run_projection(len(EVENTS) - 1, OUT / "order-status-1.log"))

    step(f"{len(LATER)} more events; the restarted projection resumes where it stopped")
    await publish(LATER)
    show(await run_projection(len(EVENTS) + len(LATER) - 1, OUT / "order-status-2.log"))

    step("replay the whole history into orders.backfill (a new consumer's queue)")
    print("  " + rabbitflow("replay", "orders.events", "--to", "orders.replay").splitlines()[-1])
    with sqlite3.connect(DB) as db:
        rows = db.execute("SELECT order_id, status FROM order_status ORDER BY order_id")
        state = ", ".join(f"{order} {status}" for order, status in rows)
    print(f"  the projection now: {state}; the stream itself is unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
