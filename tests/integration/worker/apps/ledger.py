"""A worker for process-level tests: records every delivery in a ledger file.

Environment: LEDGER (file to append to), TOPOLOGY (file), HANDLER_SLEEP (seconds),
HANDLER_PREFETCH, HANDLER_SYNC=1 for a plain def handler, QUEUE (default ``jobs``),
IDEMPOTENCY (``sqlite:PATH`` or a ``redis://`` URL) for an idempotent handler,
HANDLER_DELIVERY (``at_most_once``) for the delivery mode, HANDLER_BATCH (max_size) for
a batch handler (max_wait 100 ms), STREAM_OFFSETS (``sqlite:PATH``) for a stream
handler (``offset="first"``, consumer name ``ledger``) whose ledger's key column is the
event's offset.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from rabbitflow import App, Batch, Message, RedisStore, SQLiteOffsets, SQLiteStore

app = App(os.environ["TOPOLOGY"])
LEDGER = os.environ["LEDGER"]
SLEEP = float(os.environ.get("HANDLER_SLEEP", "0"))
PREFETCH = int(os.environ["HANDLER_PREFETCH"]) if "HANDLER_PREFETCH" in os.environ else None
QUEUE = os.environ.get("QUEUE", "jobs")
DELIVERY: Any = os.environ.get("HANDLER_DELIVERY", "at_least_once")


def _store() -> Any:
    spec = os.environ.get("IDEMPOTENCY")
    if not spec:
        return None
    if spec.startswith("sqlite:"):
        return SQLiteStore(spec.removeprefix("sqlite:"))
    return RedisStore(url=spec, prefix=os.environ.get("IDEMPOTENCY_PREFIX", "rf-test:"))


def record(body: dict[str, object], message: Message, what: str) -> None:
    line = (
        f"{body['id']} {message.attempt} {int(message.redelivered)} {os.getpid()} {what} "
        f"{body.get('key', '-')} {body.get('seq', '-')}\n"
    )
    with open(LEDGER, "a") as f:  # one write per line: whole lines even under kill -9
        f.write(line)


if os.environ.get("STREAM_OFFSETS"):
    OFFSETS = SQLiteOffsets(os.environ["STREAM_OFFSETS"].removeprefix("sqlite:"))

    @app.handler(QUEUE, prefetch=PREFETCH, offset="first", consumer_name="ledger", offsets=OFFSETS)
    async def handle_stream(body: dict[str, object], message: Message) -> None:
        body = {**body, "key": message.stream_offset}
        record(body, message, "start")
        if SLEEP:
            await asyncio.sleep(SLEEP)
        record(body, message, "done")

elif os.environ.get("HANDLER_BATCH"):

    @app.handler(QUEUE, prefetch=PREFETCH, batch=Batch(int(os.environ["HANDLER_BATCH"]), 0.1))
    async def handle_batch(bodies: list[dict[str, object]], messages: list[Message]) -> None:
        for body, message in zip(bodies, messages, strict=True):
            record(body, message, "start")
        if SLEEP:
            await asyncio.sleep(SLEEP)
        for body, message in zip(bodies, messages, strict=True):
            record(body, message, "done")

elif os.environ.get("HANDLER_SYNC") == "1":

    @app.handler(QUEUE, prefetch=PREFETCH, idempotency=_store(), delivery=DELIVERY)
    def handle_sync(body: dict[str, object], message: Message) -> None:
        record(body, message, "start")
        time.sleep(SLEEP)
        record(body, message, "done")

else:

    @app.handler(QUEUE, prefetch=PREFETCH, idempotency=_store(), delivery=DELIVERY)
    async def handle(body: dict[str, object], message: Message) -> None:
        record(body, message, "start")
        if SLEEP:
            await asyncio.sleep(SLEEP)
        record(body, message, "done")
