"""The order-status projection: the state of every order, derived from the order
service's events on the stream ``orders.events`` (event sourcing, docs/streams.md).

Run: ``rabbitflow run workers.order_status:app`` (topology:
``topologies/order-events.yaml``). The first run rebuilds the projection from the first
event; a restart resumes right after the last event it settled (the position is stored
in ``ORDER_STATUS_DB``, default ``build/order-status.db``, next to the projection).

The projection keeps, per order, the offset of the last event it applied and ignores an
event at or below it: after a crash the few events re-delivered (at most the prefetch)
change nothing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import structlog
from pydantic import BaseModel

from rabbitflow import App, Message, SQLiteOffsets

DB = Path(os.environ.get("ORDER_STATUS_DB", "build/order-status.db"))
DB.parent.mkdir(parents=True, exist_ok=True)

app = App(topology="topologies/order-events.yaml")
log = structlog.get_logger("order-status")


class OrderEvent(BaseModel):
    order_id: str
    status: str
    """placed, paid, shipped, delivered, cancelled…"""
    at: datetime | None = None


class Projection:
    """Order id → (status, offset of the event that set it), in a SQLite table."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS order_status ("
            "order_id TEXT PRIMARY KEY, status TEXT NOT NULL, event_offset INTEGER NOT NULL)"
        )

    def apply(self, event: OrderEvent, offset: int) -> bool:
        """Apply an event unless it was applied before; True when it changed the row."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO order_status VALUES (?, ?, ?) ON CONFLICT(order_id) DO UPDATE "
                "SET status = excluded.status, event_offset = excluded.event_offset "
                "WHERE excluded.event_offset > order_status.event_offset",
                (event.order_id, event.status, offset),
            )
            return cursor.rowcount > 0

    def all(self) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT order_id, status FROM order_status ORDER BY order_id")
            return dict(rows.fetchall())


projection = Projection(DB)


@app.handler(
    "orders.events",
    offset="first",
    consumer_name="order-status-v1",
    offsets=SQLiteOffsets(DB),
    retry={"max_retries": 3, "delay": "200ms"},
)
def project(event: OrderEvent, message: Message) -> None:
    assert message.stream_offset is not None
    if projection.apply(event, message.stream_offset):
        log.info(
            "order status",
            order_id=event.order_id,
            status=event.status,
            offset=message.stream_offset,
        )
