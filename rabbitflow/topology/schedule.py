"""Retry schedules computed without materialising them: the distinct delays a policy uses,
how many delay queues it needs and its longest delay, in time independent of
``max_retries`` (``max_retries: 1000000000`` is as quick as ``3``).

Every backoff is monotone in the retry number (exponential and linear grow, or shrink
with a multiplier below 1, and ``max_delay`` caps them), so each delay is used by one
contiguous run of retries, found by a binary search; only ``delays:`` lists are walked,
and they are short.
"""

from __future__ import annotations

from rabbitflow.topology.schema import Backoff, RetryPolicy

MAX_TTL_MS = 2**32 - 1
"""The longest TTL (and ``expires``) RabbitMQ accepts, in ms: about 49.7 days."""
MAX_DELAY_QUEUES = 100
"""Delay queues one retry policy may need (DESIGN.md §13)."""


def distinct_delays(policy: RetryPolicy, limit: int = MAX_DELAY_QUEUES) -> list[int]:
    """The distinct delays (ms) of ``policy`` in order of first use, at most ``limit + 1``
    of them (one more than ``limit`` tells the caller there are too many)."""
    last = policy.max_retries
    if policy.delays is not None:
        used = [policy.delay_for(n) for n in range(1, min(last, len(policy.delays)) + 1)]
        return list(dict.fromkeys(used))[: limit + 1]
    out: list[int] = []
    n = 1
    while n <= last and len(out) <= limit:
        delay = policy.delay_for(n)
        out.append(delay)
        n = _next_change(policy, n, delay, last)
    return out


def delay_queue_count(policy: RetryPolicy, limit: int = 10_000) -> int:
    """How many delay queues ``policy`` needs (one per distinct delay); ``limit + 1``
    stands for "more than ``limit``" (only a multiplier close to 1 gets there)."""
    last = policy.max_retries
    if last == 0:
        return 0
    if policy.backoff is Backoff.LINEAR and policy.delays is None:
        # delay * n are all distinct; a cap makes every later retry one more queue.
        cap = policy.max_delay
        if cap is None or policy.delay * last <= cap:
            return last
        below = min(last, (cap - 1) // policy.delay)
        return below + 1
    return len(distinct_delays(policy, limit))


def longest_delay(policy: RetryPolicy) -> tuple[int, int]:
    """(retry number, delay in ms) of the longest delay of the schedule; (0, 0) without
    retries. Backoffs are monotone: the longest is the first or the last."""
    last = policy.max_retries
    if last == 0:
        return 0, 0
    if policy.delays is not None:
        used = [policy.delay_for(n) for n in range(1, min(last, len(policy.delays)) + 1)]
        best = max(range(len(used)), key=lambda i: used[i])
        return best + 1, used[best]
    first, final = policy.delay_for(1), policy.delay_for(last)
    return (last, final) if final > first else (1, first)


def _next_change(policy: RetryPolicy, n: int, delay: int, last: int) -> int:
    """The first retry after ``n`` whose delay is not ``delay`` (``last + 1`` if none)."""
    low, step = n, 1  # delay_for(low) == delay; delay_for(high) != delay or high > last
    while True:
        probe = n + step
        if probe > last:
            high = last + 1
            break
        if policy.delay_for(probe) != delay:
            high = probe
            break
        low, step = probe, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if policy.delay_for(middle) == delay:
            low = middle
        else:
            high = middle
    return high


__all__ = [
    "MAX_DELAY_QUEUES",
    "MAX_TTL_MS",
    "delay_queue_count",
    "distinct_delays",
    "longest_delay",
]
