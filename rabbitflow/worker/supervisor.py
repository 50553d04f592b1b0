"""``rabbitflow run --processes N``: a parent that supervises N worker processes (or
between MIN and MAX with ``--processes MIN:MAX``, see `rabbitflow.worker.autoscale`).

The parent consumes nothing. It forwards SIGINT/SIGTERM to its children, restarts a
child that dies (with a back-off that resets once a child has lived a while), and exits 0
once every child has stopped after a signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from rabbitflow.worker.autoscale import Autoscaler, Sampler, ScalePolicy

log = structlog.get_logger("rabbitflow.supervisor")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 30.0
"""A child that lived this long resets the restart back-off."""


@dataclass
class Child:
    """One worker process and its restart bookkeeping."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_MIN
    restart_at: float | None = None
    restarts: int = field(default=0)
    retiring: bool = False
    """Sent SIGTERM by the autoscaler: removed, not restarted, once it exits."""


ExitListener = Callable[[int], None]
"""Called with the pid of a child that exited (to drop its metrics and health)."""


def supervise(
    argv: Sequence[str],
    processes: int,
    *,
    shutdown_timeout: float,
    env: dict[str, str] | None = None,
    records: list[Child] | None = None,
    on_exit: ExitListener | None = None,
    scaling: tuple[ScalePolicy, Sampler] | None = None,
    on_count: Callable[[int], None] | None = None,
) -> int:
    """Run ``argv`` (a single-process ``rabbitflow run``) ``processes`` times; return the
    exit code for the parent.

    Args:
        records: a list to fill with the `Child` records, for a health endpoint.
        on_exit: called with each child's pid once it has exited.
        scaling: autoscale between the policy's bounds from the sampler's counts
            (``processes`` is then the starting count, the policy's minimum).
        on_count: called with the number of processes each time it changes.
    """
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    children: list[Child] = records if records is not None else []
    children[:] = [Child(i) for i in range(processes)]
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            _spawn(child, argv, env)
        log.info("supervisor started", processes=processes)
        if on_count is not None:
            on_count(len(children))
        scaler = Autoscaler(scaling[0]) if scaling is not None else None
        next_sample = time.monotonic() + (scaling[0].interval if scaling else 0)
        while not stopping:
            now = time.monotonic()
            for child in list(children):
                if child.retiring:
                    if child.process is None or child.process.poll() is not None:
                        children.remove(child)
                        if on_exit is not None and child.process is not None:
                            on_exit(child.process.pid)
                    continue
                _check(child, argv, env, now, on_exit)
            if scaler is not None and scaling is not None and now >= next_sample:
                next_sample = now + scaling[0].interval
                _scale(scaler, scaling[1], children, argv, env, now, on_count)
            time.sleep(0.1)
        return _wait_all(children, shutdown_timeout + 5, on_exit)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _scale(
    scaler: Autoscaler,
    sampler: Sampler,
    children: list[Child],
    argv: Sequence[str],
    env: dict[str, str] | None,
    now: float,
    on_count: Callable[[int], None] | None,
) -> None:
    active = [c for c in children if not c.retiring]
    decision = scaler.decide(sampler(), len(active), now)
    if decision is None:
        return
    step, reason = decision
    if step > 0:
        used = {c.index for c in children}
        child = Child(next(i for i in range(len(children) + 1) if i not in used))
        children.append(child)
        _spawn(child, argv, env)
        log.info("scaling up", processes=len(active) + 1, reason=reason, index=child.index)
    else:
        child = max(active, key=lambda c: c.index)
        child.retiring = True
        if child.process is not None and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
        log.info("scaling down", processes=len(active) - 1, reason=reason, index=child.index)
    if on_count is not None:
        on_count(len(active) + step)


def _spawn(child: Child, argv: Sequence[str], env: dict[str, str] | None) -> None:
    import os

    child_env = {**(env or os.environ), "RABBITFLOW_WORKER_INDEX": str(child.index)}
    child.process = subprocess.Popen([sys.executable, "-m", "rabbitflow", *argv], env=child_env)
    child.started_at = time.monotonic()
    child.restart_at = None


def _check(
    child: Child,
    argv: Sequence[str],
    env: dict[str, str] | None,
    now: float,
    on_exit: ExitListener | None = None,
) -> None:
    process = child.process
    if child.restart_at is not None:
        if now >= child.restart_at:
            child.restarts += 1
            log.info("restarting worker process", index=child.index, restarts=child.restarts)
            _spawn(child, argv, env)
        return
    if process is None or process.poll() is None:
        return
    if now - child.started_at >= HEALTHY_AFTER:
        child.backoff = BACKOFF_MIN
    log.error(
        "worker process died",
        index=child.index,
        pid=process.pid,
        exit_code=process.returncode,
        restart_in_s=child.backoff,
    )
    if on_exit is not None:
        on_exit(process.pid)
    child.restart_at = now + child.backoff
    child.backoff = min(child.backoff * 2, BACKOFF_MAX)


def _wait_all(children: list[Child], timeout: float, on_exit: ExitListener | None = None) -> int:
    deadline = time.monotonic() + timeout
    code = 0
    for child in children:
        process = child.process
        if process is None:
            continue
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.error("worker process did not stop in time; killing", index=child.index)
            process.kill()
            process.wait()
        if on_exit is not None:
            on_exit(process.pid)
        if process.returncode not in (0, -signal.SIGTERM):
            code = 1
    log.info("supervisor stopped", exit_code=code)
    return code
