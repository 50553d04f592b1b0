"""A worker for process-level tests: records every delivery in a ledger file.

Environment: LEDGER (file to append to), TOPOLOGY (file), HANDLER_SLEEP (seconds),
HANDLER_PREFETCH, HANDLER_SYNC=1 for a plain def handler.
"""

from __future__ import annotations

import asyncio
import os
import time

from rabbitflow import App, Message

app = App(os.environ["TOPOLOGY"])
LEDGER = os.environ["LEDGER"]
SLEEP = float(os.environ.get("HANDLER_SLEEP", "0"))
PREFETCH = int(os.environ.get("HANDLER_PREFETCH", "10"))


def record(body: dict[str, object], message: Message, what: str) -> None:
    line = f"{body['id']} {message.attempt} {int(message.redelivered)} {os.getpid()} {what}\n"
    with open(LEDGER, "a") as f:  # one write per line: whole lines even under kill -9
        f.write(line)


if os.environ.get("HANDLER_SYNC") == "1":

    @app.handler("jobs", prefetch=PREFETCH)
    def handle_sync(body: dict[str, object], message: Message) -> None:
        record(body, message, "start")
        time.sleep(SLEEP)
        record(body, message, "done")

else:

    @app.handler("jobs", prefetch=PREFETCH)
    async def handle(body: dict[str, object], message: Message) -> None:
        record(body, message, "start")
        if SLEEP:
            await asyncio.sleep(SLEEP)
        record(body, message, "done")
