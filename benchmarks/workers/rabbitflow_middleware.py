"""rabbitflow's consume worker with one no-op ``@app.middleware``: what registering a
middleware costs (the issue's bound: at most 10 % of the plain rabbitflow figure)."""

from __future__ import annotations

from typing import Any

from benchmarks.workers.common import Spec, run
from benchmarks.workers.rabbitflow import consume


async def main(spec: Spec) -> dict[str, Any]:
    """Consume only: the other scenarios measure nothing a middleware touches."""
    return await consume(spec, middleware=True)


if __name__ == "__main__":
    run(main)
