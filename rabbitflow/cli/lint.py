"""Command: ``lint`` (DESIGN.md §10)."""

from __future__ import annotations

from collections.abc import Sequence

import click

from rabbitflow.amqp.connection import vhost_of
from rabbitflow.amqp.management import management_client
from rabbitflow.cli.common import common_options, handle_errors, run_async, settings_from
from rabbitflow.errors import ConfigError, TopologyError
from rabbitflow.lint import Finding, Severity, exit_code, lint_topology, load_located
from rabbitflow.lint.broker import (
    BrokerRules,
    BrokerState,
    HandlerTimeout,
    lint_broker,
    read_broker,
)
from rabbitflow.settings import Settings
from rabbitflow.units import parse_duration


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--broker", is_flag=True, help="Also check against the live vhost of --url.")
@click.option(
    "--app", "app_target", metavar="MODULE:APP", help="Handlers whose timeouts --broker checks."
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option(
    "--consumer-timeout",
    metavar="DURATION",
    help="The broker's consumer_timeout (its API does not show it); default 30m.",
)
@common_options
@handle_errors
def lint(
    files: tuple[str, ...],
    broker: bool,
    app_target: str | None,
    fmt: str,
    strict: bool,
    consumer_timeout: str | None,
    url: str | None,
    log_format: str | None,
) -> None:
    """Find designs in FILEs that validate but hurt in production.

    Prints FILE:LINE:COL: RFnnn severity: message (hint); exits 1 on an error (or a
    warning with --strict). Rules: docs/lint.md.
    """
    try:
        topology, locator = load_located(list(files))
    except TopologyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    findings = lint_topology(topology, locator)
    handlers: list[HandlerTimeout] = []
    if app_target is not None:
        handlers = _handler_timeouts(app_target)
    if broker:
        settings = settings_from(url, log_format)
        options = BrokerRules(handlers, _milliseconds(consumer_timeout))
        state = run_async(_read(settings))
        findings += lint_broker(topology, state, locator, options)
    _show(findings, fmt)
    raise SystemExit(exit_code(findings, strict=strict))


async def _read(settings: Settings) -> BrokerState:
    async with management_client(settings) as api:
        return await read_broker(api, vhost_of(settings.urls[0]))


def _handler_timeouts(target: str) -> list[HandlerTimeout]:
    from rabbitflow.cli.runtime import load_app

    app = load_app(target)
    return [
        HandlerTimeout(queue, spec.timeout)
        for queue, spec in app.handlers.items()
        if spec.timeout is not None
    ]


def _milliseconds(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--consumer-timeout: {exc}") from None


def _show(findings: Sequence[Finding], fmt: str) -> None:
    for finding in findings:
        click.echo(finding.as_json() if fmt == "json" else str(finding))
    if fmt == "text":
        counts = {s: sum(f.severity is s for f in findings) for s in Severity}
        click.echo(
            f"{counts[Severity.ERROR]} errors, {counts[Severity.WARNING]} warnings, "
            f"{counts[Severity.INFO]} infos",
            err=True,
        )
