"""Commands: ``dlq list``, ``dlq replay``, ``dlq purge`` (take the work queue's name)."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click
from aio_pika.abc import AbstractConnection
from rich.console import Console
from rich.table import Table

from rabbitflow import dlq as dead_letters
from rabbitflow.amqp.session import on_broker
from rabbitflow.cli.common import common_options, fail, handle_errors, run_async, settings_from
from rabbitflow.dlq_headers import parse_where
from rabbitflow.errors import ConfigError
from rabbitflow.settings import Settings
from rabbitflow.topology import load_topology
from rabbitflow.topology.dead_letters import DeadLetterQueue, find_dead_letter_queue

R = TypeVar("R")


def _topology_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--topology",
        "topology_files",
        multiple=True,
        help="Topology file(s): find the DLQ when QUEUE dead-letters to a shared exchange.",
    )(func)


@click.group()
def dlq() -> None:
    """Inspect, replay and purge the dead letters of a work queue (read from QUEUE.dlq)."""


@dlq.command("list")
@click.argument("queue")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter and line.")
@_topology_option
@common_options
@handle_errors
def list_(
    queue: str,
    limit: int | None,
    as_json: bool,
    topology_files: tuple[str, ...],
    url: str | None,
    log_format: str | None,
) -> None:
    """Show the dead letters of QUEUE, leaving them in place and in order."""
    settings = settings_from(url, log_format)
    target = _dead_letter_queue(queue, topology_files)
    rows = run_async(
        _with_connection(settings, lambda c: dead_letters.list_dead_letters(c, target, limit))
    )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    _print_table(rows, target)


@dlq.command()
@click.argument("queue")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Move at most N.")
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="HEADER=VALUE",
    help="Only messages whose header matches (wildcards * ? allowed); repeatable.",
)
@_topology_option
@common_options
@handle_errors
def replay(
    queue: str,
    limit: int | None,
    where: tuple[str, ...],
    topology_files: tuple[str, ...],
    url: str | None,
    log_format: str | None,
) -> None:
    """Move dead letters back to QUEUE only, each confirmed before it leaves the DLQ."""
    settings = settings_from(url, log_format)
    try:
        conditions = parse_where(where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    target = _dead_letter_queue(queue, topology_files)
    result = run_async(
        _with_connection(
            settings,
            lambda c: dead_letters.replay(
                c, target, limit=limit, where=conditions, publish_timeout=settings.publish_timeout
            ),
        )
    )
    text = f"moved {result.moved} dead letter{'s' * (result.moved != 1)} from {target.name}"
    if result.skipped:
        text += f"; {result.skipped} not matching left in place"
    click.echo(text)
    if result.failed:
        for reason in result.failed[:10]:
            click.echo(f"not moved: {reason}", err=True)
        fail(f"{len(result.failed)} dead letters could not be moved and stay in {target.name}")


@dlq.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Really drop them (required).")
@_topology_option
@common_options
@handle_errors
def purge(
    queue: str, yes: bool, topology_files: tuple[str, ...], url: str | None, log_format: str | None
) -> None:
    """Drop the dead letters of QUEUE for good."""
    settings = settings_from(url, log_format)
    target = _dead_letter_queue(queue, topology_files)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"refusing to purge {target.name} without --yes")
        click.confirm(f"Drop every dead letter of {queue} in {target.name}?", abort=True)
    count = run_async(_with_connection(settings, lambda c: dead_letters.purge(c, target)))
    click.echo(f"purged {count} dead letter{'s' * (count != 1)} from {target.name}")


def _dead_letter_queue(queue: str, topology_files: Sequence[str]) -> DeadLetterQueue:
    topology = load_topology(list(topology_files)) if topology_files else None
    return find_dead_letter_queue(queue, topology)


async def _with_connection(
    settings: Settings, work: Callable[[AbstractConnection], Awaitable[R]]
) -> R:
    return await on_broker(settings, work, name="rabbitflow dlq")


def _print_table(rows: Sequence[dict[str, Any]], target: DeadLetterQueue) -> None:
    if not rows:
        click.echo(f"no dead letters of {target.work_queue} in {target.name}")
        return
    table = Table(
        title=f"dead letters of {target.work_queue} in {target.name} (left in place)",
        title_justify="left",
    )
    for header in ("#", "message id", "attempt", "failed at", "error", "published to"):
        table.add_column(header, overflow="fold")
    for row in rows:
        routed = (
            f"{row['exchange'] or '(default)'} / {row['routing_key'] or ''}"
            if row["exchange"] is not None
            else "-"
        )
        table.add_row(
            str(row["position"]),
            row["message_id"] or "-",
            str(row["attempt"]),
            row["failed_at"] or "-",
            row["error"] or "-",
            routed,
        )
    Console().print(table)
