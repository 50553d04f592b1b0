"""The ``rabbitflow`` command group: the commands of the sibling modules (``topology``,
``runtime``, ``ops``, ``dlq``, ``lint``) added to it in one place; what they share is in
`rabbitflow.cli.common`.
"""

from __future__ import annotations

import logging

import click

from rabbitflow.cli import dlq, lint, ops, runtime, topology
from rabbitflow.cli.common import (
    Context,
    common_options,
    fail,
    handle_errors,
    run_async,
    settings_from,
)

__all__ = [
    "Context",
    "common_options",
    "fail",
    "handle_errors",
    "main",
    "run_async",
    "settings_from",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rabbitflow")
def main() -> None:
    """rabbitflow: RabbitMQ topology in YAML, plain handlers, one CLI."""
    # aio-pika and aiormq log connection failures through the stdlib's last-resort
    # handler, which would print a second, raw line next to ours; rabbitflow logs every
    # event that matters itself.
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


for _command in (
    topology.validate,
    topology.declare_command,
    topology.graph,
    runtime.run,
    runtime.publish,
    ops.status,
    ops.plan,
    ops.export,
    ops.import_,
    dlq.dlq,
    lint.lint,
):
    main.add_command(_command)
