"""The garbage collector of a worker process (README "Performance", ``RABBITFLOW_GC_TUNING``).

A delivery allocates a few dozen short-lived container objects (coroutines, tasks,
futures, the message and its headers). With CPython's default thresholds (700, 10, 10)
that is a young collection every ~30 deliveries, and every few thousand a full one that
walks every object the process holds — the imported modules, pydantic's schemas, the
app — although none of those will ever be garbage. Measured in process
(``python -m benchmarks.pipeline_cost``): the collector was 1.7 to 5 µs of a 12 to 18 µs
delivery, most of what one no-op middleware seemed to cost, and more at prefetch 1,000
(more deliveries alive at each collection, so more of them promoted and walked again).

So, once a worker has connected and its lifespan has run, it

- moves every object that exists then into the permanent generation (`gc.freeze`, as
  Instagram does for its forked workers): they are never walked again, and never freed
  (they live as long as the process anyway);
- raises the young generation's threshold to 10,000 allocations (the older two keep
  theirs), so a delivery is far more often garbage before a collection sees it. A cycle
  of garbage (a failed run's traceback) lives a few thousand deliveries longer at most,
  and the full collections that free what got older are cheap now: they walk only what
  was made since the freeze. Memory stays bounded by the prefetch (the memory benchmark).

Only when the thresholds are still CPython's defaults (a process that tuned its own
collector keeps its tuning), once per process, and not with ``RABBITFLOW_GC_TUNING=false``.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger("rabbitflow.worker")

DEFAULT_THRESHOLDS = (700, 10, 10)
"""CPython's own (3.8–3.12)."""
WORKER_THRESHOLDS = (10_000, 10, 10)

_tuned = False


def tune_for_worker() -> bool:
    """Tune this process's collector for a worker; True when it did (the first time)."""
    global _tuned
    if _tuned or gc.get_threshold() != DEFAULT_THRESHOLDS:
        return False
    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()
    gc.set_threshold(*WORKER_THRESHOLDS)
    _tuned = True
    log.debug(
        "garbage collector tuned for a worker",
        frozen=gc.get_freeze_count(),
        thresholds=WORKER_THRESHOLDS,
    )
    return True


def untune() -> None:
    """Back to CPython's defaults (tests; the frozen objects stay frozen)."""
    global _tuned
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_THRESHOLDS)
    _tuned = False
