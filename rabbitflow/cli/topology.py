"""Commands that read topology files: ``validate``, ``declare`` and ``graph``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from rabbitflow.amqp.connection import connect_with, vhost_of
from rabbitflow.amqp.declare import DeclareResult, binding_label, conflicts, declare
from rabbitflow.amqp.management import management_client
from rabbitflow.amqp.policies import PolicyResult, apply_policies
from rabbitflow.cli.common import common_options, fail, handle_errors, run_async, settings_from
from rabbitflow.errors import TopologyError
from rabbitflow.logs import configure_logging
from rabbitflow.render.graph import Format, render
from rabbitflow.settings import Settings
from rabbitflow.topology import Topology, load_topology
from rabbitflow.topology.expand import Declarations, Role, expand
from rabbitflow.topology.loader import load_sources
from rabbitflow.topology.schema import ExchangeBinding
from rabbitflow.topology.source import read_source

FILES = click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)


@click.command()
@FILES
@common_options
def validate(files: tuple[Path, ...], url: str | None, log_format: str | None) -> None:
    """Check topology files; print one summary line per file, or every error.

    Never connects to a broker.
    """
    # Each file is read once: the summaries use the documents the merge read.
    sources = [read_source(str(f)) for f in files]
    try:
        topology = load_sources(sources)
    except TopologyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
        raise SystemExit(1) from None
    for file, source in zip(files, sources, strict=True):
        click.echo(f"{file}: ok ({summary(file_part(topology, source.data))})")


@click.command("declare")
@FILES
@click.option("--dry-run", is_flag=True, help="Print what would be declared; connect to nothing.")
@common_options
@handle_errors
def declare_command(
    files: tuple[Path, ...], dry_run: bool, url: str | None, log_format: str | None
) -> None:
    """Declare every exchange, queue and binding of the files, idempotently.

    Prints created/exists per object; exits 1 after reporting every conflict.
    """
    decls = expand(_load_or_exit(files))
    if dry_run:
        for line in dry_run_lines(decls):
            click.echo(line)
        return
    settings = settings_from(url, log_format)
    configure_logging(settings.effective_log_format, settings.log_level)
    results, policies = run_async(_declare(settings, decls))
    for result in results:
        if result.conflict is None:
            click.echo(str(result))
    for applied in policies:
        click.echo(str(applied))
    found = conflicts(results)
    for conflict in found:
        click.echo(f"error: {conflict}", err=True)
    if found:
        raise SystemExit(1)


@click.command()
@FILES
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in Format]),
    default=Format.MERMAID.value,
    show_default=True,
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of stdout.",
)
@common_options
@handle_errors
def graph(
    files: tuple[Path, ...],
    fmt: str,
    output: Path | None,
    url: str | None,
    log_format: str | None,
) -> None:
    """Draw exchanges, queues, bindings, retry and dead-letter paths."""
    text = render(expand(_load_or_exit(files)), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")


async def _declare(
    settings: Settings, decls: Declarations
) -> tuple[list[DeclareResult], list[PolicyResult]]:
    connection = await connect_with(settings)
    try:
        results = await declare(connection, decls)
    finally:
        await connection.close()
    if not decls.policies:
        return results, []
    async with management_client(settings) as api:
        policies = await apply_policies(api, vhost_of(settings.urls[0]), decls.policies)
    return results, policies


def _load_or_exit(files: Sequence[Path]) -> Topology:
    try:
        return load_topology(files)
    except TopologyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None


def file_part(topology: Topology, data: object) -> Topology:
    """The part of a merged topology that one file's document declares (for its summary)."""
    if not isinstance(data, dict):
        return Topology()

    def names(section: str) -> set[str]:
        entries = data.get(section)
        return set(entries) if isinstance(entries, dict) else set()

    exchanges, queues = names("exchanges"), names("queues")
    raw_bindings = data.get("bindings")
    # The merged load already validated these entries.
    bindings = [ExchangeBinding.model_validate(b) for b in raw_bindings or []]
    return Topology(
        exchanges={n: e for n, e in topology.exchanges.items() if n in exchanges},
        queues={n: q for n, q in topology.queues.items() if n in queues},
        bindings=bindings,
    )


def summary(topology: Topology) -> str:
    """``3 exchanges, 5 queues, 4 retry queues, 2 dead-letter queues, 6 bindings``."""
    decls = expand(topology)

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    roles = [q.role for q in decls.queues]
    return ", ".join(
        [
            count(sum(e.role is Role.DECLARED for e in decls.exchanges), "exchange"),
            count(roles.count(Role.DECLARED), "queue"),
            count(roles.count(Role.RETRY), "retry queue"),
            count(roles.count(Role.DEAD_LETTER), "dead-letter queue"),
            count(sum(b.role is Role.DECLARED for b in decls.bindings), "binding"),
        ]
    )


def dry_run_lines(decls: Declarations) -> list[str]:
    """What `declare` would send, one object a line, without connecting."""
    lines = []
    for ex in decls.exchanges:
        lines.append(f"would declare exchange {ex.name} ({ex.type}){_args(ex.arguments)}")
    for q in decls.queues:
        if q.worker_owned:
            lines.append(f"would skip    queue    {q.name} (exclusive/auto-delete: a worker's)")
        else:
            lines.append(f"would declare queue    {q.name}{_args(q.arguments)}")
    for b in decls.bindings:
        lines.append(f"would bind    binding  {binding_label(b)}")
    for p in decls.policies:
        lines.append(
            f"would set     policy   {p.name} (pattern {p.pattern!r}, apply-to {p.apply_to}, "
            f"priority {p.priority}) {dict(p.definition)}"
        )
    return lines


def _args(arguments: object) -> str:
    return f" {dict(arguments)}" if isinstance(arguments, dict) and arguments else ""
