"""A worker whose async handler blocks the event loop with ``time.sleep`` (a bug the
watchdog must name), recording to the same ledger format as the ledger worker."""

from __future__ import annotations

import os
import time

from rabbitflow import App, Message
from tests.integration.worker.apps.ledger import record

app = App(os.environ["TOPOLOGY"])
SLEEP = float(os.environ.get("HANDLER_SLEEP", "3"))


@app.handler("jobs", prefetch=1)
async def blocks_the_loop(body: dict[str, object], message: Message) -> None:
    record(body, message, "start")
    time.sleep(SLEEP)  # noqa: ASYNC251 - the bug under test: blocking code in async def
    record(body, message, "done")
