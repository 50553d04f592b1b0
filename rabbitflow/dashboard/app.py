"""The dashboard as a Starlette application (``rabbitflow dashboard`` serves it with
uvicorn)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rabbitflow.dashboard.book import DeadLetterBook
from rabbitflow.dashboard.security import Guard, Sessions
from rabbitflow.dashboard.source import Source
from rabbitflow.dashboard.views import Problem, Views, problem
from rabbitflow.errors import RabbitflowError
from rabbitflow.settings import Settings
from rabbitflow.topology import Topology

STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True)
class DashboardConfig:
    """How the dashboard runs."""

    settings: Settings
    topology: Topology | None = None
    """The files' topology; None shows the live vhost."""
    read_only: bool = False
    loopback_only: bool = True
    """Serve only loopback ``Host`` names (the server is bound to 127.0.0.1 or ::1)."""


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard application."""
    token = config.settings.dashboard_token
    sessions = Sessions(token.get_secret_value() if token is not None else None)
    source = Source(config.settings, config.topology)
    book = DeadLetterBook(source.on_broker)
    views = Views(source, book, read_only=config.read_only)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await source.open()
        try:
            yield
        finally:
            await source.close()

    app = Starlette(
        routes=[
            Route("/", views.page),
            Route("/api/status", views.status),
            Route("/api/dead-letters", views.dead_letters),
            Route("/api/traceback", views.traceback),
            Route("/api/replay", views.replay, methods=["POST"]),
            Route("/api/purge", views.purge, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(Guard, sessions=sessions, loopback_only=config.loopback_only)],
        exception_handlers={Problem: problem, RabbitflowError: problem},
        lifespan=lifespan,
    )
    app.state.book = book
    app.state.sessions = sessions
    return app
