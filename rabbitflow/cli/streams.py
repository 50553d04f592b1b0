"""Command: ``replay`` (re-publish the stored events of a stream queue, DESIGN.md §9)."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import click

from rabbitflow.amqp.publish import check_destination
from rabbitflow.cli.common import common_options, fail, run_async, settings_from
from rabbitflow.dlq_headers import parse_where
from rabbitflow.errors import ConfigError, InvalidName
from rabbitflow.settings import Settings, mask_url
from rabbitflow.streams.replay import (
    Position,
    ReplayResult,
    describe_position,
    parse_position,
    parse_until,
)
from rabbitflow.topology.names import name_problem, short


@click.command()
@click.argument("stream")
@click.option("--to", "exchange", required=True, help='Exchange to publish to ("" = default).')
@click.option("--routing-key", default=None, help="Routing key of every copy (default: kept).")
@click.option(
    "--from",
    "start",
    default="first",
    show_default=True,
    metavar="OFFSET|TIME|DURATION",
    help="first, last, next, an offset (42), an ISO time, or a duration (1h: the last hour).",
)
@click.option(
    "--until", default=None, metavar="OFFSET|TIME", help="Last offset, or latest timestamp."
)
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="HEADER=VALUE",
    help="Only events whose header matches (wildcards * ? allowed); repeatable.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Replay at most N.")
@common_options
def replay(
    stream: str,
    exchange: str,
    routing_key: str | None,
    start: str,
    until: str | None,
    where: tuple[str, ...],
    limit: int | None,
    url: str | None,
    log_format: str | None,
) -> None:
    """Re-publish the stored events of STREAM to an exchange, with confirms.

    Each copy keeps its body, properties, headers and (unless --routing-key) routing key,
    and gets x-rabbitflow-replayed-from: STREAM@OFFSET. The stream is left unchanged.
    Replays up to the stream's last event when the command starts. Exits 1 when any copy
    was not confirmed.
    """
    settings = settings_from(url, log_format)
    try:
        problem = name_problem(stream, "queue")
        if problem is not None:
            raise ConfigError(f"STREAM {short(stream)}: {problem}")
        check_destination(exchange, routing_key or "")
        position = parse_position(start)
        last = parse_until(until) if until is not None else None
        conditions = parse_where(where)
    except (ValueError, ConfigError, InvalidName) as exc:
        fail(str(exc))
        return
    text, ok, errors = run_async(
        _replay(settings, stream, exchange, routing_key, position, last, conditions, limit)
    )
    click.echo(text)
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if not ok:
        sys.exit(1)


async def _replay(
    settings: Settings,
    stream: str,
    exchange: str,
    routing_key: str | None,
    position: Position,
    until: int | datetime | None,
    where: list[tuple[str, str]],
    limit: int | None,
) -> tuple[str, bool, list[str]]:
    from rich.progress import Progress

    from rabbitflow.amqp.session import on_broker
    from rabbitflow.cli.runtime import Summary
    from rabbitflow.producer import Producer
    from rabbitflow.streams.replay import replay as run_replay

    started = time.perf_counter()
    show = sys.stderr.isatty()
    async with Producer(settings=settings, name="rabbitflow-replay") as producer:
        await producer.link.get()  # fail fast with one clear line if the broker is away
        with Progress(disable=not show, transient=True) as bar:
            task = bar.add_task(f"replaying {stream}", total=limit)
            result: ReplayResult = await on_broker(
                settings,
                lambda connection: run_replay(
                    connection,
                    producer.publish_many,
                    stream,
                    exchange,
                    routing_key=routing_key,
                    start=position,
                    until=until,
                    where=where,
                    limit=limit,
                    progress=lambda _i: bar.advance(task),
                ),
                name="rabbitflow replay",
            )
    elapsed = time.perf_counter() - started
    summary = Summary(
        result.published,
        elapsed,
        result.matched,
        mask_url(settings.urls[0]),
        exchange,
        routing_key or "(kept)",
    )
    span = (
        f"offsets {result.first_offset}..{result.last_offset}"
        if result.first_offset is not None
        else f"nothing from {describe_position(position)}"
    )
    skipped = result.read - result.matched
    head = f"replayed {stream} ({span}; {result.read} read"
    head += f", {skipped} not matching --where)" if where else ")"
    return f"{head}: {summary.text}", summary.ok, summary.errors


__all__ = ["replay"]
