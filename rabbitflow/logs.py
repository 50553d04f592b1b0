"""Logging setup: structlog configured once, console on a terminal, JSON lines otherwise.

Only this module configures structlog. An application that configured structlog itself
keeps its configuration: `configure_logging` then changes nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["console", "json"]
"""``console``: coloured, aligned lines for people; ``json``: one object per line."""


def configure_logging(format: LogFormat | None = None, level: str | int = "INFO") -> bool:
    """Configure structlog for rabbitflow's commands and workers, once.

    Args:
        format: ``console`` or ``json``; None picks console on a terminal, else JSON.
        level: the lowest level logged, as a name (``INFO``) or a number.

    Returns:
        True when this call configured structlog, False when it was configured already.
    """
    if structlog.is_configured():
        return False
    if format is None:
        format = "console" if sys.stderr.isatty() else "json"
    numeric = (
        level
        if isinstance(level, int)
        else logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    )
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if format == "console"
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if format == "json":
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # Not cached: module-level loggers then follow a later reconfiguration (tests,
        # applications that configure after importing rabbitflow); the hot path binds
        # its loggers once per consumer anyway.
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(shared, renderer, numeric)
    return True


def _route_stdlib_logging(
    shared: list[structlog.typing.Processor], renderer: structlog.typing.Processor, level: int
) -> None:
    """Render the standard library's records (aio-pika, aiormq) like our own events."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(max(level, logging.WARNING))
    # A failed connect is raised to us and reported once, passwords masked, as
    # BrokerUnavailable; aiormq would also log each attempt with its own wording.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
