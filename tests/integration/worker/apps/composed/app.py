"""The app: both routers included, a lifespan that opens a "database" on ``app.state``.

Environment: TOPOLOGY (file); LIFESPAN_FAIL=1 makes the lifespan raise on entry;
EVENTS (file) receives one line per lifespan step.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rabbitflow import App
from tests.integration.worker.apps.composed import emails, payments


class DatabaseDown(Exception):
    pass


def _event(text: str) -> None:
    path = os.environ.get("EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[None]:
    if os.environ.get("LIFESPAN_FAIL") == "1":
        raise DatabaseDown("cannot reach db at 127.0.0.1:1")
    app.state.db = {"open": True}
    _event("entered")
    yield
    app.state.db["open"] = False
    _event("exited")


def make_app(topology: str, url: str | None = None) -> App:
    app = App(topology, url=url, lifespan=lifespan)
    app.include_router(payments.router)
    app.include_router(emails.router)
    return app


app = make_app(os.environ["TOPOLOGY"]) if "TOPOLOGY" in os.environ else None
