"""``python -m benchmarks``: rabbitflow against raw aio-pika and FastStream, same broker, same run.

Each case runs in rounds (one per repetition). A round gets a fresh vhost with one fresh
queue per implementation, fills them in one go through a fanout exchange (pipelined
confirms, not measured), runs the implementations one after the other in alternating
order (A B C, then C B A, ...), each in its own interpreter, checks that every queue was
drained and acked, and deletes the vhost.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from benchmarks import broker, report
from benchmarks.report import RESULTS
from benchmarks.runner import ROOT, _env, check_drained, run_processes, run_single, spec_for
from benchmarks.scenarios import (
    FULL,
    IMPLS,
    MEMORY,
    QUICK,
    SCENARIOS,
    STREAM_QUEUE,
    Case,
    build_cases,
    order,
)
from benchmarks.stats import summarise


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small counts, 1 repetition")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    p.add_argument(
        "--impls", default="", help="comma-separated subset of implementations (default: all)"
    )
    p.add_argument("--repetitions", type=int, default=None, help="repetitions per case")
    p.add_argument(
        "--count", type=int, default=None, help="messages per throughput run (overrides the preset)"
    )
    p.add_argument("--memory-count", type=int, default=None, help="backlog of the memory case")
    p.add_argument(
        "--memory-impls",
        default=",".join(MEMORY),
        help="implementations of the memory case (default: %(default)s)",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the workers (uvloop must be installed)",
    )
    p.add_argument(
        "--prefetches",
        default="1,10,100,1000",
        help="prefetch values of the consume case (default: 1,10,100,1000)",
    )
    p.add_argument("--output", type=Path, default=RESULTS, help="the JSON results file")
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    names = {*args.memory_impls.split(","), *(args.impls.split(",") if args.impls else ())}
    if bad := names - set(IMPLS):
        p.error(
            f"unknown implementation(s): {', '.join(sorted(bad))} (choose from {', '.join(IMPLS)})"
        )
    return args


def probe_rabbitflow() -> str | None:
    """Why rabbitflow's worker API cannot be used, or None when it can."""
    code = "from rabbitflow import App, Message; App.handler; App.publish"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=60,
    )
    if out.returncode == 0:
        return None
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    return lines[-1] if lines else f"exit {out.returncode}"


def queue_name(impl: str) -> str:
    """The queue an implementation uses in a round."""
    return "bench." + impl.replace("+", ".")


def topology_text(case: Case, queues: list[str]) -> str:
    """rabbitflow's topology for a round: plain classic queues, and a retry policy on
    rabbitflow's queue in the retry case."""
    lines = ["version: 1", "queues:"]
    if case.scenario == "stream":
        return "\n".join([*lines, f"  {STREAM_QUEUE}:", "    type: stream"]) + "\n"
    for q in queues:
        if case.scenario == "retry" and q == queue_name("rabbitflow"):
            lines += [
                f"  {q}:",
                "    retry: {max_retries: 3, backoff: fixed, delay: 1ms}",
                "    dead_letter: true",
            ]
        else:
            lines.append(f"  {q}: {{}}")
    return "\n".join(lines) + "\n"


async def prepare(case: Case, url: str, impls: tuple[str, ...], topology: str) -> None:
    """Declare the round's queues and bind them to the fill exchange."""
    if case.scenario == "stream":
        # One stream every implementation reads from its first event.
        await broker.declare_topology(url, topology)
        await broker.bind_fanout(url, "bench.fill", [STREAM_QUEUE])
        return
    plain: dict[str, dict[str, Any]] = {
        queue_name(i): {} for i in impls if not (case.scenario == "retry" and i == "rabbitflow")
    }
    if case.scenario == "retry":
        for impl in impls:
            if impl != "rabbitflow":
                q = queue_name(impl)
                plain[f"{q}.delay"] = {
                    "x-message-ttl": 1,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": q,
                }
    await broker.declare(url, plain)
    if "rabbitflow" in impls:
        await broker.declare_topology(url, topology)
    if needs_fill(case):
        await broker.bind_fanout(url, "bench.fill", [queue_name(i) for i in impls])


def needs_fill(case: Case) -> bool:
    """Whether the case drains a pre-filled queue."""
    return case.scenario in (
        "consume",
        "retry",
        "memory",
        "processes",
        "at_most_once",
        "batch",
        "stream",
    )


def run_round(
    case: Case, impls: tuple[str, ...], loop: str, console: Console
) -> dict[str, dict[str, Any]]:
    """One repetition of a case: a fresh vhost, every implementation once."""
    with broker.fresh_vhost() as vhost, tempfile.TemporaryDirectory() as tmp:
        url = broker.amqp_url(vhost)
        topology = str(Path(tmp) / "topology.yaml")
        Path(topology).write_text(topology_text(case, [queue_name(i) for i in impls]))
        started = time.monotonic()
        asyncio.run(prepare(case, url, impls, topology))
        if needs_fill(case):
            broker.fill_parallel(url, "bench.fill", case.count)
            console.log(f"{case.key}: filled {case.count:,} in {time.monotonic() - started:.1f}s")

        def one(impl: str) -> dict[str, Any]:
            queue = STREAM_QUEUE if case.scenario == "stream" else queue_name(impl)
            spec = spec_for(case, impl, url, queue, topology, loop)
            logs = Path(tmp) / impl
            logs.mkdir()
            run = run_processes if case.scenario == "processes" else run_single
            result = run(case, impl, spec, logs)
            check_drained(case, url, queue, result)
            console.log(f"  {impl}: {_brief(result)}")
            return result

        if case.side_by_side:
            # The memory case watches a curve, not a rate: draining the backlogs at the same
            # time keeps the full run within its time budget.
            with ThreadPoolExecutor(len(impls)) as pool:
                futures = {impl: pool.submit(one, impl) for impl in impls}
            results = {impl: f.result() for impl, f in futures.items()}
        else:
            results = {impl: one(impl) for impl in impls}
    return results


def _brief(result: dict[str, Any]) -> str:
    if "rate" in result:
        extra = f", p99 {result['p99']:.1f} ms" if "p99" in result else ""
        if "cpu_us" in result:
            extra += f", {result['cpu_us']:.0f} µs CPU/msg"
        return f"{result['rate']:,.0f} msg/s{extra}"
    return str(result.get("unavailable") or result.get("error"))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    versions: dict[str, str | None] = {}
    for pkg in ("aio-pika", "aiormq", "faststream", "pydantic", "rabbitflow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "broker": broker.broker_version(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases, print the table, write the JSON file."""
    args = parse(argv)
    console = Console(stderr=True)
    preset = QUICK if args.quick else FULL
    cases = build_cases(
        preset,
        tuple(args.scenarios.split(",")),
        args.repetitions,
        args.count,
        args.memory_count,
        tuple(args.memory_impls.split(",")),
        tuple(int(p) for p in args.prefetches.split(",")),
    )
    wanted = set(args.impls.split(",")) if args.impls else None
    unavailable: dict[str, str] = {}
    if reason := probe_rabbitflow():
        unavailable["rabbitflow"] = reason
        console.print(f"rabbitflow: not available ({reason})")
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) / 2:
        console.print(
            f"warning: load average {load_before[0]:.1f} before the run: "
            "other work on this machine will move the figures"
        )
    started = time.monotonic()
    out_cases: list[dict[str, Any]] = []
    for case in cases:
        impls = tuple(i for i in case.impls if wanted is None or i in wanted)
        runs: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
        live = tuple(i for i in impls if i not in unavailable)
        for rep in range(case.repetitions):
            for impl, result in run_round(case, order(live, rep), args.loop, console).items():
                runs[impl].append(result)
        for impl in impls:
            if impl in unavailable:
                runs[impl].append({"unavailable": unavailable[impl]})
        out_cases.append(
            {
                "scenario": case.scenario,
                "variant": case.variant,
                "impls": list(impls),
                "params": {
                    "count": case.count,
                    "prefetch": case.prefetch,
                    "mode": case.mode,
                    "window": case.window,
                    "processes": case.processes,
                    "rate": case.rate,
                    "seconds": case.seconds,
                    "repetitions": case.repetitions,
                },
                "summary": {i: summarise(case.scenario, runs[i]) for i in impls},
                "runs": runs,
            }
        )
    elapsed = time.monotonic() - started
    report.show(out_cases, unavailable, Console(width=max(Console().width, 150)))
    report.write_json(
        args.output,
        {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(
                ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
            ),
            "preset": "quick" if args.quick else "full",
            "loop": args.loop,
            "elapsed_seconds": round(elapsed, 1),
            "machine": machine(),
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "unavailable": unavailable,
            "cases": out_cases,
        },
    )
    console.print(f"done in {elapsed:.0f}s; results in {args.output}")
    return 0
