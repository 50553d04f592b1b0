"""Helpers of the operations tests: declare a topology, run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.topology import Topology
from rabbitflow.topology.expand import expand

DATA = Path(__file__).parents[2] / "data" / "ops"
MANAGEMENT_URL = (
    f"http://{os.environ.get('RABBITFLOW_TEST_HOST', '127.0.0.1')}:"
    f"{os.environ.get('RABBITFLOW_TEST_MANAGEMENT_PORT', '15672')}"
)

RABBITFLOW = [sys.executable, "-c", "from rabbitflow.cli.main import main; main()"]


async def declare_topology(url: str, topology: Topology) -> None:
    """Declare every object `expand` gives (worker-owned queues excepted)."""
    connection = await connect(url)
    try:
        await declare(connection, expand(topology))
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
