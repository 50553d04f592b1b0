"""Commands: ``status``, ``plan``, ``export``, ``import`` (and, from `cli.dlq`, ``dlq``)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from aio_pika.abc import AbstractConnection
from rich.console import Group
from rich.live import Live
from rich.table import Table

from rabbitflow.amqp.delay_status import (
    DelayLadder,
    busy_levels,
    hold_text,
    ladder_from_amqp,
    ladder_from_management,
    summary,
)
from rabbitflow.amqp.management import management_client
from rabbitflow.amqp.plan import Action, Plan, compare, live_declarations
from rabbitflow.amqp.session import on_broker
from rabbitflow.amqp.status import (
    QueueStatus,
    StreamStatus,
    layout_from_topology,
    rows_from_management,
    status_from_amqp,
    stream_names,
    stream_status,
)
from rabbitflow.cli import exports
from rabbitflow.cli.common import (
    common_options,
    fail,
    handle_errors,
    run_async,
    settings_from,
    table_console,
)
from rabbitflow.cli.runtime import load_app
from rabbitflow.errors import ConfigError, ManagementUnavailable
from rabbitflow.render import k8s
from rabbitflow.render.adopt import adopt, check_imported
from rabbitflow.render.definitions import (
    declarations_from_definitions,
    not_imported,
    retry_metadata,
    to_definitions,
    worker_owned_queues,
)
from rabbitflow.settings import Settings, vhost_of
from rabbitflow.streams.offsets import OffsetStore, offsets_from
from rabbitflow.topology import Topology, load_topology
from rabbitflow.topology.delay import level_name
from rabbitflow.topology.expand import Declarations, delayed_exchanges, expand


@click.command()
@click.argument("files", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue and line.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--offsets",
    "offsets_spec",
    default=None,
    metavar="sqlite:PATH|redis://...",
    help="Stream offset store: show each stored consumer position and its lag.",
)
@common_options
@handle_errors
def status(
    files: tuple[str, ...],
    as_json: bool,
    watch: bool,
    interval: float,
    offsets_spec: str | None,
    url: str | None,
    log_format: str | None,
) -> None:
    """Per queue: ready, unacked, consumers, rates, retrying and dead letters.

    With FILEs, the queues they declare; without, every queue of the vhost. Streams get
    a second table: events held, first and last offsets, and with --offsets the stored
    consumer positions and their lag (not with --watch). With `delayed: true` exchanges
    (or, without FILEs, a ladder in the vhost), the delay ladder: messages waiting per
    level.
    """
    settings = settings_from(url, log_format)
    topology = load_topology(list(files)) if files else None
    if not watch:
        offsets = offsets_from(offsets_spec) if offsets_spec else None
        rows, note, ladder = run_async(_collect_status(settings, topology))
        streams = run_async(_collect_streams(settings, rows, topology, offsets))
        _show_status(rows, note, as_json, streams, ladder)
        return
    try:
        run_async(_watch_status(settings, topology, as_json, interval))
    except SystemExit as exc:
        if exc.code != 130:
            raise  # Ctrl-C ends --watch normally; anything else is an error


async def _collect_status(
    settings: Settings, topology: Topology | None
) -> tuple[list[QueueStatus], str | None, DelayLadder | None]:
    """The rows, a note when the management API is not there, and the delay ladder (when
    the topology has ``delayed: true`` exchanges or, without one, the vhost has it)."""
    vhost = vhost_of(settings.urls[0])
    layout = layout_from_topology(topology) if topology is not None else None
    expected = topology is not None and bool(delayed_exchanges(topology))
    try:
        async with management_client(settings) as api:
            queues = await api.queues(vhost)
        ladder = ladder_from_management(queues, expected=expected)
        return rows_from_management(queues, layout), None, ladder
    except ManagementUnavailable as exc:
        note = f"{exc}. Showing what AMQP tells (passive declares): no unacked counts and no rates"

    async def work(connection: AbstractConnection) -> tuple[list[QueueStatus], DelayLadder | None]:
        rows = await status_from_amqp(connection, topology)
        return rows, (await ladder_from_amqp(connection) if expected else None)

    rows, ladder = await on_broker(settings, work, name="rabbitflow status")
    return rows, note, ladder


async def _collect_streams(
    settings: Settings,
    rows: Sequence[QueueStatus],
    topology: Topology | None,
    offsets: OffsetStore | None,
) -> list[StreamStatus]:
    names = stream_names(rows, topology)
    if not names:
        if offsets is not None:
            await offsets.close()
        return []
    sizes = {r.queue: r.ready for r in rows}

    async def work(connection: AbstractConnection) -> list[StreamStatus]:
        return [
            await stream_status(connection, n, messages=sizes.get(n), offsets=offsets)
            for n in names
        ]

    try:
        return await on_broker(settings, work, name="rabbitflow status")
    finally:
        if offsets is not None:
            await offsets.close()


def _streams_table(streams: Sequence[StreamStatus]) -> Table:
    table = Table(title="streams", title_justify="left")
    for header in (
        "stream",
        "events",
        "first offset",
        "last offset",
        "consumer",
        "position",
        "lag",
    ):
        table.add_column(
            header, justify="left" if header in ("stream", "consumer") else "right", overflow="fold"
        )
    for s in streams:
        if not s.exists:
            table.add_row(s.stream, "[red]missing[/red]", *["-"] * 5)
            continue
        cells = [s.stream, _cell(s.messages), _cell(s.first_offset), _cell(s.last_offset)]
        if not s.positions:
            table.add_row(*cells, "-", "-", "-")
        for i, p in enumerate(s.positions):
            head = cells if i == 0 else ["", "", "", ""]
            table.add_row(*head, p.consumer_name, str(p.offset), _cell(p.lag))
    return table


async def _watch_status(
    settings: Settings, topology: Topology | None, as_json: bool, interval: float
) -> None:
    if as_json:
        while True:
            rows, note, ladder = await _collect_status(settings, topology)
            _show_status(rows, note, True, ladder=ladder)
            await asyncio.sleep(interval)
    with Live(auto_refresh=False, console=table_console()) as live:
        while True:
            rows, note, ladder = await _collect_status(settings, topology)
            shown: Table | Group = _status_table(rows, note)
            if ladder is not None:
                shown = Group(shown, _ladder_table(ladder))
            live.update(shown, refresh=True)
            await asyncio.sleep(interval)


def _show_status(
    rows: Sequence[QueueStatus],
    note: str | None,
    as_json: bool,
    streams: Sequence[StreamStatus] = (),
    ladder: DelayLadder | None = None,
) -> None:
    if note:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        # A stream's offsets and positions go on its queue's line, under "stream".
        extra = {s.stream: s.as_json() for s in streams}
        for row in rows:
            line = row.as_json()
            if row.queue in extra:
                line["stream"] = extra[row.queue]
            click.echo(json.dumps(line))
        if ladder is not None:
            click.echo(json.dumps(ladder.as_json()))
        return
    table_console().print(_status_table(rows, None))
    if streams:
        table_console().print(_streams_table(streams))
    if ladder is not None:
        table_console().print(_ladder_table(ladder))


def _ladder_table(ladder: DelayLadder) -> Table:
    """The levels holding something (or missing), under a one-line summary."""
    table = Table(title=summary(ladder), title_justify="left")
    for header in ("level", "holds", "waiting", "dead-lettering"):
        table.add_column(header, justify="left" if header == "level" else "right")
    for level in busy_levels(ladder):
        name, holds = level_name(level.level), hold_text(level.seconds)
        if not level.exists:
            table.add_row(name, holds, "[red]missing[/red]", "-")
            continue
        table.add_row(name, holds, _cell(level.waiting), _cell(level.dead_lettering))
    return table


def _status_table(rows: Sequence[QueueStatus], note: str | None) -> Table:
    table = Table(title=note, title_justify="left")
    for header in (
        "queue",
        "ready",
        "unacked",
        "consumers",
        "publish/s",
        "deliver/s",
        "retrying",
        "dead letters",
    ):
        # A name wraps on a narrow terminal rather than being cut to "notify…".
        left = header == "queue"
        table.add_column(header, justify="left" if left else "right", overflow="fold")
    for r in rows:
        if not r.exists:
            table.add_row(r.queue, "[red]missing[/red]", *["-"] * 6)
            continue
        dead = _cell(r.dead_letters)
        if r.dead_letters:
            dead = f"[bold red]{dead}[/bold red]"
        table.add_row(
            r.queue,
            _cell(r.ready),
            _cell(r.unacked),
            _cell(r.consumers),
            _cell(r.publish_rate),
            _cell(r.deliver_rate),
            _cell(r.retrying),
            dead,
        )
    if not rows:
        table.caption = "no queues"
    return table


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change and line.")
@common_options
@handle_errors
def plan(files: tuple[str, ...], as_json: bool, url: str | None, log_format: str | None) -> None:
    """Compare FILEs with the live broker; exit 0 in sync, 2 with differences."""
    settings = settings_from(url, log_format)
    declared = expand(load_topology(list(files)))
    vhost = vhost_of(settings.urls[0])

    async def fetch() -> Plan:
        async with management_client(settings) as api:
            return compare(declared, await live_declarations(api, vhost))

    result = run_async(fetch())
    _show_plan(result, vhost, as_json)
    sys.exit(0 if result.in_sync else 2)


def _show_plan(result: Plan, vhost: str, as_json: bool) -> None:
    if as_json:
        for change in result.changes:
            click.echo(
                json.dumps(
                    {
                        "action": change.action.value,
                        "kind": change.kind,
                        "name": change.name,
                        "differences": [
                            {"argument": d.argument, "broker": d.live, "files": d.declared}
                            for d in change.differences
                        ],
                    },
                    default=str,
                )
            )
        return
    for change in result.changes:
        click.echo(change.describe())
    counts = {a: sum(c.action is a for c in result.changes) for a in Action}
    if result.skipped:
        click.echo(f"skipped (declared by workers): {', '.join(result.skipped)}")
    if result.in_sync:
        click.echo(f"in sync: vhost {vhost!r} holds what the files declare")
    else:
        click.echo(
            f"{counts[Action.CREATE]} to create, {counts[Action.DIFFER]} differing, "
            f"{counts[Action.EXTRA]} on the broker but in no file (vhost {vhost!r})"
        )


@click.command("export")
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["definitions", "k8s", "asyncapi"]),
    default="definitions",
    show_default=True,
    help="RabbitMQ definitions, Kubernetes resources, or an AsyncAPI 3.0 document.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    help="Where to write, or - for stdout (required for definitions; default - otherwise).",
)
@click.option(
    "--vhost", default=None, help="Vhost written into the output; default: the vhost of --url."
)
@click.option("--cluster", default=None, help="k8s: the RabbitmqCluster's name (required).")
@click.option("--namespace", default=None, help="k8s: metadata.namespace of every resource.")
@click.option(
    "--app", "app_target", metavar="MODULE:APP", help="k8s: ScaledObjects; asyncapi: handlers."
)
@click.option("--min-replicas", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-replicas", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--deployment-prefix",
    default=None,
    help="k8s: ScaledObjects scale Deployments PREFIX-QUEUE; default: the app's module.",
)
@click.option(
    "--host-env",
    default="RABBITFLOW_URL",
    show_default=True,
    help="k8s: the workload's variable holding one AMQP URL, read by KEDA (hostFromEnv).",
)
@common_options
@handle_errors
def export(
    files: tuple[str, ...],
    fmt: str,
    output: str | None,
    vhost: str | None,
    cluster: str | None,
    namespace: str | None,
    app_target: str | None,
    min_replicas: int,
    max_replicas: int,
    deployment_prefix: str | None,
    host_env: str,
    url: str | None,
    log_format: str | None,
) -> None:
    """Write RabbitMQ definitions, Kubernetes resources or an AsyncAPI document for FILEs."""
    settings = settings_from(url, log_format)
    topology = load_topology(list(files))
    declarations = expand(topology)
    target = vhost if vhost is not None else vhost_of(settings.urls[0])
    if fmt == "definitions":
        if output is None:
            raise click.UsageError("Missing option '-o' / '--output'.")
        _export_definitions(topology, declarations, target, output)
        return
    app = load_app(app_target) if app_target is not None else None
    if fmt == "k8s":
        if cluster is None:
            raise click.UsageError("--format k8s needs --cluster NAME (the RabbitmqCluster)")
        if min_replicas > max_replicas:
            raise click.UsageError("--min-replicas is larger than --max-replicas")
        exports.write_k8s(
            topology,
            declarations,
            k8s.Cluster(cluster, target, namespace),
            app,
            k8s.Scaling(min_replicas, max_replicas, host_env),
            deployment_prefix or (exports.module_of(app_target) if app_target else "rabbitflow"),
            output or "-",
        )
        return
    exports.write_asyncapi(
        topology, declarations, target, app, settings, list(files), output or "-"
    )


def _export_definitions(
    topology: Topology, declarations: Declarations, target: str, output: str
) -> None:
    document = to_definitions(declarations, target, topology)
    _write(output, json.dumps(document, indent=2) + "\n")
    skipped = worker_owned_queues(declarations)
    if output != "-":
        click.echo(
            f"wrote {len(document['exchanges'])} exchanges, {len(document['queues'])} "
            f"queues, {len(document['bindings'])} bindings, {len(document['policies'])} "
            f"policies for vhost {target!r} to {output}"
        )
    if skipped:
        click.echo(f"left out (declared by workers): {', '.join(skipped)}", err=True)


@click.command("import")
@click.argument("definitions")
@click.option("-o", "--output", required=True, help="topology.yaml, or - for stdout.")
@click.option(
    "--vhost", default=None, help="Which vhost to read when the definitions hold several."
)
@common_options
@handle_errors
def import_(
    definitions: str, output: str, vhost: str | None, url: str | None, log_format: str | None
) -> None:
    """Turn a broker's exported definitions into a topology file.

    What a topology cannot hold (policies, shovels, plugin exchanges…) is left out with one
    warning line per kind on stderr; the exit status is still 0.
    """
    document = _read_json(definitions)
    adopted = adopt(declarations_from_definitions(document, vhost), retry_metadata(document))
    adopted.warnings += [kind.describe() for kind in not_imported(document, vhost)]
    problems = check_imported(adopted.document, definitions)
    if problems:
        for line in problems[:-1]:
            click.echo(f"error: {line}", err=True)
        fail(problems[-1])
    text = adopted.to_yaml()
    _write(output, text)
    for line in adopted.warnings:
        click.echo(f"warning: {line}", err=True)
    for note in adopted.notes:
        click.echo(f"note: {note}", err=True)
    if output != "-":
        document_out = adopted.document
        click.echo(
            f"wrote {len(document_out.get('exchanges', {}))} exchanges and "
            f"{len(document_out.get('queues', {}))} queues to {output}"
        )


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON: {str(exc).splitlines()[0]}") from None


def _write(output: str, text: str) -> None:
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
