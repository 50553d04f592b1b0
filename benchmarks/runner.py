"""Runs one implementation in its own interpreter and watches it: RSS, readiness, result.

Nothing in a worker's start-up is measured: the worker times itself from its first
delivery (or first publish) to its last, and reports that.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from benchmarks import broker
from benchmarks.scenarios import IMPLS, Case
from benchmarks.workers.common import Spec

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and its children, in bytes (0 once gone)."""
    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child may exit between the two calls
                total += p.memory_info().rss
    except psutil.Error:
        return 0
    return total


class Worker:
    """A worker subprocess whose stdout is read on a thread (``READY``, then the result)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=ROOT, text=True
        )
        self.ps = psutil.Process(self.proc.pid)
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "READY" and not self.ready.is_set():
                self.ready_at = time.monotonic()
                self.ready.set()
            else:
                self.lines.append(line.strip())

    def result(self, log: Path) -> dict[str, Any]:
        """The worker's JSON result, or an error naming what went wrong."""
        self._reader.join(5)
        self._log.close()
        for line in reversed(self.lines):
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                return data
        tail = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        return {"error": f"exit {self.proc.returncode}: {tail[-1] if tail else 'no output'}"}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; only this worker's own process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spec_for(case: Case, impl: str, url: str, queue: str, topology: str, loop: str) -> Spec:
    """What one worker is asked to do."""
    return Spec(
        scenario=case.scenario,
        url=url,
        queue=queue,
        count=case.count,
        prefetch=case.prefetch,
        validate=IMPLS[impl].validate,
        mode=case.mode or "",
        window=case.window,
        retry_queue=f"{queue}.delay",
        topology=topology,
        loop=loop,
    )


def run_single(case: Case, impl: str, spec: Spec, logs: Path) -> dict[str, Any]:
    """Run one worker to completion, sampling its RSS; start the pacer for latency."""
    log = logs / f"{impl}.log"
    args = [
        sys.executable,
        "-m",
        f"benchmarks.workers.{IMPLS[impl].module}",
        json.dumps(asdict(spec)),
    ]
    worker = Worker(args, _env(), log)
    budget = 60 + case.count / 300 + case.seconds
    deadline = time.monotonic() + budget
    interval = 0.5 if case.scenario == "memory" else 0.1
    samples: list[tuple[float, int]] = []
    pacer: subprocess.Popen[bytes] | None = None
    try:
        while worker.proc.poll() is None:
            if time.monotonic() > deadline:
                return {"error": f"timed out after {budget:.0f}s"}
            if case.scenario == "latency" and pacer is None and worker.ready.is_set():
                pacer = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.workers.pacer",
                        json.dumps(
                            {
                                "url": spec.url,
                                "queue": spec.queue,
                                "rate": case.rate,
                                "seconds": case.seconds,
                            }
                        ),
                    ],
                    env=_env(),
                    cwd=ROOT,
                )
            rss = tree_rss(worker.ps)
            if rss and worker.ready.is_set():
                samples.append((time.monotonic() - worker.ready_at, rss))
            time.sleep(interval)
    finally:
        worker.stop()
        if pacer is not None:
            pacer.wait(30)
    result = worker.result(log)
    if samples:
        result["rss_peak"] = max(s[1] for s in samples)
        if case.scenario == "memory":
            result["rss_samples"] = samples
    return result


def run_processes(case: Case, impl: str, spec: Spec, logs: Path) -> dict[str, Any]:
    """Run ``case.processes`` workers on one queue until together they drained it."""
    stats = logs / f"stats-{impl}"
    stats.mkdir()
    env = _env(BENCH_STATS_DIR=str(stats), BENCH_SPEC=json.dumps(asdict(spec)))
    workers: list[Worker] = []
    if impl == "rabbitflow":
        workers.append(
            Worker(
                [
                    *rabbitflow_command(),
                    "run",
                    "benchmarks.workers.rf_app:app",
                    "--processes",
                    str(case.processes),
                    "--url",
                    spec.url,
                ],
                env,
                logs / f"{impl}.log",
            )
        )
    else:
        args = [
            sys.executable,
            "-m",
            f"benchmarks.workers.{IMPLS[impl].module}",
            json.dumps(asdict(spec)),
        ]
        workers += [Worker(args, env, logs / f"{impl}-{n}.log") for n in range(case.processes)]
    budget = 60 + case.count / 300
    deadline = time.monotonic() + budget
    peak = 0
    try:
        while True:
            peak = max(peak, sum(tree_rss(w.ps) for w in workers))
            parts = [json.loads(p.read_text()) for p in stats.glob("*.json")]
            if sum(p["count"] for p in parts) >= case.count:
                break
            if any(w.proc.poll() is not None for w in workers):
                return workers[0].result(
                    logs / f"{impl}.log" if impl == "rabbitflow" else logs / f"{impl}-0.log"
                )
            if time.monotonic() > deadline:
                return {"error": f"timed out after {budget:.0f}s"}
            time.sleep(0.1)
    finally:
        for w in workers:
            w.stop()
    seconds = max(p["last"] for p in parts) - min(p["first"] for p in parts)
    total = sum(p["count"] for p in parts)
    return {
        "count": total,
        "seconds": seconds,
        "rate": total / seconds,
        "rss_peak": peak,
        "per_process": [p["count"] for p in parts],
    }


def rabbitflow_command() -> list[str]:
    """``python -m rabbitflow`` (the rabbitflow of this tree) where the package has a
    ``__main__``, else the ``rabbitflow`` script installed next to this interpreter."""
    if importlib.util.find_spec("rabbitflow.__main__") is not None:
        return [sys.executable, "-m", "rabbitflow"]
    return [str(Path(sys.executable).with_name("rabbitflow"))]


def check_drained(case: Case, url: str, queue: str, result: dict[str, Any]) -> None:
    """Every message consumed was acked: nothing may come back to the queue."""
    if "rate" not in result or case.scenario == "stream":
        return  # a stream keeps every event: reading removes none
    left = asyncio.run(broker.depth(url, queue))
    expected = case.count if case.scenario == "publish" else 0
    if left != expected:
        result["error"] = f"{left} messages in the queue afterwards, expected {expected}"
