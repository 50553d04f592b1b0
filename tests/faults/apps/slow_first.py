"""A worker whose handler overruns the broker's consumer_timeout on a message's first
delivery (HANDLER_SLEEP seconds) and is quick on a redelivery."""

from __future__ import annotations

import asyncio
import os

from rabbitflow import App, Message
from tests.integration.worker.apps.ledger import record

app = App(os.environ["TOPOLOGY"])
SLEEP = float(os.environ.get("HANDLER_SLEEP", "8"))


@app.handler("jobs", prefetch=1)
async def slow_first_time(body: dict[str, object], message: Message) -> None:
    record(body, message, "start")
    if not message.redelivered:
        await asyncio.sleep(SLEEP)
    record(body, message, "done")
