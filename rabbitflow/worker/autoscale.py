"""``rabbitflow run --processes MIN:MAX``: when to add or remove a worker process
(DESIGN.md §8). The decision is pure (`Autoscaler.decide`); the sample comes from the
management API's message counts of the served queues (`management_sampler`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rabbitflow.errors import ConfigError


@dataclass(frozen=True)
class Sample:
    """The served queues, summed: messages waiting, and delivered but not yet acked."""

    ready: int
    unacked: int


Sampler = Callable[[], Sample | None]
"""Reads a `Sample`; None when the counts cannot be read (nothing is changed then)."""


@dataclass(frozen=True)
class ScalePolicy:
    minimum: int
    maximum: int
    interval: float = 5.0
    """Seconds between samples."""
    backlog: int = 1
    """Ready messages above which the queues count as backlogged."""
    grow_after: int = 3
    """Consecutive backlogged samples, with the processes busy, before one is added."""
    idle_after: float = 60.0
    """Seconds with nothing ready and nothing unacked before one process is removed."""


def parse_processes(text: str) -> tuple[int, int]:
    """``N`` → (N, N); ``MIN:MAX`` → (MIN, MAX).

    Raises:
        ConfigError: anything else, or bounds outside 1 ≤ MIN ≤ MAX ≤ 256.
    """
    m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text)
    if m is None:
        raise ConfigError(f"--processes takes N or MIN:MAX (e.g. 1:8), got {text!r}")
    low = int(m[1])
    high = int(m[2]) if m[2] is not None else low
    if not 1 <= low <= high <= 256:
        raise ConfigError(f"--processes {text}: need 1 <= MIN <= MAX <= 256")
    return low, high


class Autoscaler:
    """Decides, sample by sample, whether to add (+1) or remove (-1) a process."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._backlogged = 0
        self._idle_since: float | None = None

    def decide(self, sample: Sample | None, count: int, now: float) -> tuple[int, str] | None:
        """(+1 or -1, the reason) or None; never outside [minimum, maximum]."""
        p = self.policy
        if sample is None:
            return None
        if sample.ready == 0 and sample.unacked == 0:
            self._backlogged = 0
            if self._idle_since is None:
                self._idle_since = now
            if count > p.minimum and now - self._idle_since >= p.idle_after:
                self._idle_since = now  # one at a time, each after a full idle period
                return -1, f"idle for {p.idle_after:g}s (nothing ready, nothing unacked)"
            return None
        self._idle_since = None
        if sample.ready > p.backlog and sample.unacked > 0:
            self._backlogged += 1
            if self._backlogged >= p.grow_after and count < p.maximum:
                self._backlogged = 0
                return +1, (
                    f"backlog of {sample.ready} ready messages for {p.grow_after} samples "
                    f"while the processes hold {sample.unacked} unacked"
                )
        else:
            self._backlogged = 0
        return None


def management_sampler(
    base: str, user: str, password: str, vhost: str, queues: Sequence[str], timeout: float = 5.0
) -> Sampler:
    """A `Sampler` over ``GET /api/queues/{vhost}/{queue}`` (message counts)."""
    from urllib.parse import quote

    import httpx

    client = httpx.Client(
        base_url=base.rstrip("/") + "/api", auth=(user, password), timeout=timeout
    )

    def sample() -> Sample | None:
        ready = unacked = 0
        try:
            for queue in queues:
                r = client.get(f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}")
                if r.status_code != 200:
                    return None
                data = r.json()
                ready += int(data.get("messages_ready") or 0)
                unacked += int(data.get("messages_unacknowledged") or 0)
        except (httpx.HTTPError, ValueError):
            return None
        return Sample(ready, unacked)

    return sample
