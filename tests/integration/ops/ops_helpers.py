"""Helpers of the operations tests: declare a topology with plain aio-pika, run the CLI.

The shared declarer (`rabbitflow.amqp.declare`) is written in parallel; these tests declare
`expand(topology)` themselves so they depend only on the contract of `expand`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from rabbitflow.topology import Topology
from rabbitflow.topology.expand import expand

DATA = Path(__file__).parents[2] / "data" / "ops"
MANAGEMENT_URL = f"http://{os.environ.get('RABBITFLOW_TEST_HOST', '127.0.0.1')}:15672"

RABBITFLOW = [sys.executable, "-c", "from rabbitflow.cli.main import main; main()"]


async def declare_topology(url: str, topology: Topology) -> None:
    """Declare every object `expand` gives (worker-owned queues excepted)."""
    decls = expand(topology)
    connection = await aio_pika.connect(url)
    try:
        channel = await (await connection.channel()).get_underlay_channel()
        for e in decls.exchanges:
            await channel.exchange_declare(
                e.name,
                exchange_type=e.type,
                durable=e.durable,
                auto_delete=e.auto_delete,
                internal=e.internal,
                arguments=dict(e.arguments),
            )
        for q in decls.queues:
            if not q.worker_owned:
                await channel.queue_declare(
                    q.name,
                    durable=q.durable,
                    auto_delete=q.auto_delete,
                    arguments=dict(q.arguments),
                )
        for b in decls.bindings:
            if b.destination_type == "exchange":
                await channel.exchange_bind(
                    b.destination, b.source, b.routing_key, arguments=dict(b.arguments)
                )
            else:
                await channel.queue_bind(
                    b.destination, b.source, b.routing_key, arguments=dict(b.arguments)
                )
    finally:
        await connection.close()


@dataclass
class Result:
    """A finished CLI run."""

    code: int
    out: str
    err: str


def run_cli(
    amqp_url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Result:
    """Run ``rabbitflow ARGS...`` in a subprocess against ``amqp_url``."""
    full_env = {
        **os.environ,
        "RABBITFLOW_URL": amqp_url,
        "RABBITFLOW_MANAGEMENT_URL": MANAGEMENT_URL,
        **(env or {}),
    }
    done = subprocess.run(
        [*RABBITFLOW, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)
