"""What every command shares: the common options, the settings they resolve to, and
turning a `RabbitflowError` into one line on stderr and a non-zero exit.

Command modules import this one, never `rabbitflow.cli.main`; `main` imports them and
adds their commands, so the imports of the CLI point one way (no cycle).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from rabbitflow.errors import RabbitflowError
from rabbitflow.settings import Settings, mask_url

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Context:
    """What the group's options resolved to, passed to every command."""

    settings: Settings


def fail(message: str, code: int = 1) -> None:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"error: {mask_url(message)}", err=True)
    sys.exit(code)


def run_async(coro: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine for a command; errors become one line and exit 1."""
    try:
        return asyncio.run(coro)
    except RabbitflowError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    raise AssertionError("unreachable")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a `RabbitflowError` raised by a command into one stderr line and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RabbitflowError as exc:
            fail(str(exc))
        raise AssertionError("unreachable")

    return wrapper


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--log-format``, accepted after any command name (DESIGN.md §3)."""
    func = click.option(
        "--url",
        envvar=None,
        default=None,
        help="AMQP URL(s), comma-separated; default RABBITFLOW_URL.",
    )(func)
    func = click.option(
        "--log-format",
        type=click.Choice(["console", "json"]),
        default=None,
        help="Log format; default console on a terminal, else json.",
    )(func)
    return func


def settings_from(url: str | None, log_format: str | None, **overrides: Any) -> Settings:
    """Settings from the environment with command-line options on top."""
    try:
        base = Settings()
    except ValidationError as exc:  # a bad RABBITFLOW_* variable
        fail(
            "; ".join(
                f"invalid setting RABBITFLOW_{'_'.join(map(str, e['loc'])).upper()}: "
                f"{e['msg']} (got {e.get('input')!r})"
                for e in exc.errors(include_url=False)
            )
        )
        raise
    values = {"url": url, "log_format": log_format, **overrides}
    changes = {k: v for k, v in values.items() if v is not None}
    return base.model_copy(update=changes) if changes else base
