"""``rabbitflow migrate``: recreate the queues ``plan`` reports as impossible in place."""

from __future__ import annotations

import sys

import click

from rabbitflow.amqp.connection import connect_with, vhost_of
from rabbitflow.amqp.declare import conflicts, declare
from rabbitflow.amqp.management import management_client
from rabbitflow.amqp.migrate import Migrator, QueueMigration, queues_to_migrate
from rabbitflow.amqp.plan import live_declarations
from rabbitflow.amqp.policies import apply_policies
from rabbitflow.cli.common import common_options, handle_errors, run_async, settings_from
from rabbitflow.errors import RabbitflowError
from rabbitflow.settings import Settings
from rabbitflow.topology import load_topology
from rabbitflow.topology.expand import Declarations, expand


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--queue", "queues", multiple=True, help="Migrate only this queue (repeatable).")
@click.option("--yes", is_flag=True, help="Do it without asking.")
@click.option("--wait", is_flag=True, help="Wait for the queue's consumers to go, else refuse.")
@common_options
@handle_errors
def migrate(
    files: tuple[str, ...],
    queues: tuple[str, ...],
    yes: bool,
    wait: bool,
    url: str | None,
    log_format: str | None,
) -> None:
    """Recreate queues whose type, durability or arguments changed, moving every message.

    Publishers may keep publishing. Interrupted, run it again: it resumes where the broker
    shows it stopped (duplicates possible, no loss). See docs/operations.md.
    """
    settings = settings_from(url, log_format)
    declared = expand(load_topology(list(files)))
    vhost = vhost_of(settings.urls[0])
    todo = run_async(_plan(settings, declared, vhost, queues))
    if not todo:
        click.echo(f"nothing to migrate: no queue of vhost {vhost!r} needs recreating")
        sys.exit(0)
    for m in todo:
        click.echo(
            f"migrate queue {m.name!r}" + (f" ({m.describe})" if m.describe else " (resume)")
        )
        for step in m.steps():
            click.echo(f"  {step}")
    if not yes:
        if not sys.stdin.isatty():
            click.echo(
                "error: migrate changes the broker: pass --yes (or run it on a terminal)", err=True
            )
            sys.exit(1)
        click.confirm("Go ahead?", abort=True)
    run_async(_run(settings, declared, vhost, todo, wait))


async def _plan(
    settings: Settings, declared: Declarations, vhost: str, only: tuple[str, ...]
) -> list[QueueMigration]:
    async with management_client(settings) as api:
        return queues_to_migrate(declared, await live_declarations(api, vhost), only)


async def _run(
    settings: Settings,
    declared: Declarations,
    vhost: str,
    todo: list[QueueMigration],
    wait: bool,
) -> None:
    connection = await connect_with(settings, name="rabbitflow-migrate")
    try:
        async with management_client(settings) as api:
            migrator = Migrator(connection, api, vhost, wait=wait, say=click.echo)
            for m in todo:
                report = await migrator.run(m)
                line = (
                    f"migrated {m.name}: {report.moved_out} moved out, "
                    f"{report.moved_back} moved back"
                )
                if report.resumed:
                    line += " (resumed)"
                click.echo(line)
                for note in report.notes:
                    click.echo(f"  note: {note}")
            # Everything else the files declare (bindings, new objects, policies), so that
            # `plan` is in sync afterwards.
            found = conflicts(await declare(connection, declared))
            if found:
                raise RabbitflowError(f"after migrating, declare found a conflict: {found[0]}")
            await apply_policies(api, vhost, declared.policies)
    finally:
        await connection.close()
