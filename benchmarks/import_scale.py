"""``python -m benchmarks.import_scale``: ``rabbitflow import`` and ``validate`` on large
definitions, no broker needed (issue 20).

Each case writes a definitions file, runs ``rabbitflow import`` on it and
``rabbitflow validate`` on the topology written, in this process (click's runner), and
reports wall and CPU seconds of each. Both must grow linearly with the number of objects.

| case | definitions |
|---|---|
| ``10k-queues`` | 10,000 classic queues, nothing else (like sample-configs' 10k-classic-queues) |
| ``100x1000-bindings`` | 100 queues, each bound with 1,000 keys to one topic exchange |
| ``10k-queues-100k-bindings`` | 10,000 queues, each with a ``Q.dlx``/``Q.dlq``, 10 bindings |
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner


def queues_only(count: int) -> dict[str, Any]:
    return {
        "queues": [{"name": f"q{i}", "durable": True, "arguments": {}} for i in range(count)],
        "exchanges": [],
        "bindings": [],
    }


def bound(queues: int, keys: int, dead_letters: bool) -> dict[str, Any]:
    exchanges: list[dict[str, Any]] = [{"name": "events", "type": "topic"}]
    qs: list[dict[str, Any]] = []
    bs: list[dict[str, Any]] = []
    for i in range(queues):
        name = f"q{i}"
        args = {"x-dead-letter-exchange": f"{name}.dlx"} if dead_letters else {}
        qs.append({"name": name, "arguments": args})
        if dead_letters:
            qs.append({"name": f"{name}.dlq", "arguments": {}})
            exchanges.append({"name": f"{name}.dlx", "type": "fanout"})
            bs.append({"source": f"{name}.dlx", "destination": f"{name}.dlq"})
        bs += [
            {"source": "events", "destination": name, "routing_key": f"k.{i}.{j}"}
            for j in range(keys)
        ]
    return {"exchanges": exchanges, "queues": qs, "bindings": bs}


CASES: dict[str, Callable[[int], dict[str, Any]]] = {
    "10k-queues": lambda scale: queues_only(10_000 // scale),
    "100x1000-bindings": lambda scale: bound(100, 1000 // scale, dead_letters=False),
    "10k-queues-100k-bindings": lambda scale: bound(10_000 // scale, 10, dead_letters=True),
}


def _timed(args: list[str]) -> tuple[float, float]:
    from rabbitflow.cli.main import main

    wall, cpu = time.perf_counter(), time.process_time()
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        raise SystemExit(f"rabbitflow {' '.join(args)} failed: {result.output[-500:]}")
    return time.perf_counter() - wall, time.process_time() - cpu


def run(cases: list[str], scale: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases:
            document = CASES[name](scale)
            definitions, topology = Path(tmp, f"{name}.json"), Path(tmp, f"{name}.yaml")
            definitions.write_text(json.dumps(document))
            import_wall, import_cpu = _timed(["import", str(definitions), "-o", str(topology)])
            validate_wall, validate_cpu = _timed(["validate", str(topology)])
            rows.append(
                {
                    "case": name,
                    "queues": len(document["queues"]),
                    "bindings": len(document["bindings"]),
                    "import_s": round(import_wall, 2),
                    "import_cpu_s": round(import_cpu, 2),
                    "validate_s": round(validate_wall, 2),
                    "validate_cpu_s": round(validate_cpu, 2),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | queues | bindings | import s (CPU) | validate s (CPU) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['case']} | {r['queues']:,} | {r['bindings']:,} | {r['import_s']} "
        f"({r['import_cpu_s']}) | {r['validate_s']} ({r['validate_cpu_s']}) |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_scale")
    parser.add_argument("--quick", action="store_true", help="each case 10 times smaller")
    parser.add_argument("--cases", default=",".join(CASES), help=",".join(CASES))
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    options = parser.parse_args(argv)
    rows = run(options.cases.split(","), 10 if options.quick else 1)
    print(table(rows))
    if options.json:
        options.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
