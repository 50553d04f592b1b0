"""What ``/healthz`` answers: 200 only while connected and every consumer is active.

A consumer paused by an open circuit breaker counts as healthy (it is deliberate); one
the broker cancelled, or any consumer while the connection is being re-established,
does not. With ``--processes N`` each child writes its health to a small JSON file in the
shared metrics directory and the supervisor combines them with what it knows of its
children (alive, restarting).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Health:
    """One answer of ``/healthz``: ok, why not, and the details behind it."""

    ok: bool
    reasons: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        return {
            "status": "ok" if self.ok else "unavailable",
            "reasons": list(self.reasons),
            **self.details,
        }


class ConsumerView(Protocol):
    """What health needs of a consumer (`QueueConsumer` has it)."""

    @property
    def state(self) -> str:
        """``consuming``, ``paused`` or ``down``."""


def worker_health(
    started: bool,
    connected: bool,
    consumers: Iterable[tuple[str, str]],
    stuck: Iterable[tuple[str, float, float]] = (),
) -> Health:
    """Health of one worker process.

    Args:
        started: the worker is running (not before start, nor after stop).
        connected: its consuming connection is open.
        consumers: (queue, state) of each consumer.
        stuck: (queue, seconds, limit) of each consumer holding a delivery for longer
            than its limit (a handler that ignores its timeout, a settle that hangs).
    """
    states = dict(consumers)
    stuck_reasons = []
    for queue, seconds, limit in stuck:
        states[queue] = "stuck"
        stuck_reasons.append(
            f"consumer stuck: {queue} has held a delivery for {seconds:.0f}s "
            f"(limit {limit:.0f}s: its timeout, or the shutdown timeout, twice over)"
        )
    if not started:
        return Health(False, ("worker not running",), {"connected": False, "consumers": states})
    reasons: list[str] = []
    if not connected:
        reasons.append("not connected to the broker (reconnecting)")
    down = sorted(q for q, s in states.items() if s == "down")
    if down and connected:
        reasons.append(f"consumer down: {', '.join(down)}")
    reasons += stuck_reasons
    return Health(not reasons, tuple(reasons), {"connected": connected, "consumers": states})


def health_file(directory: str | Path, pid: int) -> Path:
    """Where child ``pid`` writes its health."""
    return Path(directory) / f"health_{pid}.json"


def write_health(directory: str | Path, health: Health, pid: int | None = None) -> None:
    """Write a child's health atomically (the parent may read at any moment)."""
    pid = os.getpid() if pid is None else pid
    target = health_file(directory, pid)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": pid, **health.body()}))
    os.replace(temporary, target)


def read_health(directory: str | Path, pid: int) -> dict[str, Any] | None:
    """A child's last written health, or None when it wrote none (yet)."""
    try:
        data = json.loads(health_file(directory, pid).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def combine(children: Iterable[tuple[int, int | None, bool]], directory: str | Path) -> Health:
    """The supervisor's health: every child alive and healthy.

    Args:
        children: (index, pid, alive) per child; pid None while it waits to restart.
        directory: the shared metrics directory the children write their health to.
    """
    reasons: list[str] = []
    processes: list[dict[str, Any]] = []
    for index, pid, alive in children:
        entry: dict[str, Any] = {"index": index, "pid": pid}
        if pid is None or not alive:
            entry["status"] = "dead"
            reasons.append(f"process {index}: not running (restarting)")
        else:
            reported = read_health(directory, pid)
            if reported is None:
                entry["status"] = "starting"
                reasons.append(f"process {index}: starting")
            else:
                entry.update({k: v for k, v in reported.items() if k != "pid"})
                if reported.get("status") != "ok":
                    why = "; ".join(reported.get("reasons") or ["unavailable"])
                    reasons.append(f"process {index}: {why}")
        processes.append(entry)
    return Health(not reasons, tuple(reasons), {"processes": processes})


__all__ = ["Health", "combine", "read_health", "worker_health", "write_health"]
