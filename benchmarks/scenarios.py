"""What the harness runs: implementations, cases, and the two presets (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Impl:
    """One implementation under test."""

    key: str
    label: str
    module: str
    """The worker module under ``benchmarks.workers``."""
    validate: bool = False
    """Decode the body into the pydantic ``Order`` model in the handler."""


IMPLS: dict[str, Impl] = {
    i.key: i
    for i in (
        Impl("aiopika", "aio-pika", "aiopika"),
        Impl("aiopika+pydantic", "aio-pika + pydantic", "aiopika", validate=True),
        Impl("faststream", "FastStream", "faststream"),
        Impl("faststream+pydantic", "FastStream + pydantic", "faststream", validate=True),
        Impl("rabbitflow", "rabbitflow + pydantic", "rabbitflow", validate=True),
        Impl("aiormq", "raw aiormq, no_ack, no-op", "aiormq_floor"),
        Impl(
            "rabbitflow+middleware",
            "rabbitflow + pydantic + 1 no-op middleware",
            "rabbitflow_middleware",
            validate=True,
        ),
    )
}
BASELINE = "aiopika"
"""Every ratio is to raw aio-pika (no validation) in the same case."""

SCENARIOS = (
    "consume",
    "publish",
    "latency",
    "retry",
    "memory",
    "processes",
    "at_most_once",
    "batch",
    "stream",
)


@dataclass(frozen=True)
class Case:
    """One row group of the table: a scenario with its parameters and the impls it compares."""

    scenario: str
    variant: str
    impls: tuple[str, ...]
    count: int = 0
    prefetch: int = 100
    mode: str = ""
    window: int = 100
    processes: int = 1
    rate: int = 0
    seconds: float = 0.0
    repetitions: int = 3
    side_by_side: bool = False
    """Run the implementations at the same time (each on its own queue) instead of in turn."""

    @property
    def key(self) -> str:
        """A stable identifier, e.g. ``consume/prefetch 100``."""
        return f"{self.scenario}/{self.variant}"


@dataclass(frozen=True)
class Preset:
    """Message counts and repetitions for one kind of run."""

    repetitions: int
    consume: int
    consume_prefetch_1: int
    publish: int
    publish_each: int
    latency_rate: int
    latency_seconds: float
    retry: int
    memory: int
    processes: int
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Preset(
    repetitions=3,
    consume=10_000,
    consume_prefetch_1=2_000,
    publish=10_000,
    publish_each=2_000,
    latency_rate=2_000,
    latency_seconds=10.0,
    retry=4_000,
    memory=1_000_000,
    processes=20_000,
)
QUICK = Preset(
    repetitions=1,
    consume=1_500,
    consume_prefetch_1=300,
    publish=1_500,
    publish_each=200,
    latency_rate=2_000,
    latency_seconds=1.0,
    retry=300,
    memory=20_000,
    processes=3_000,
)

CONSUMERS = (
    "aiopika",
    "aiopika+pydantic",
    "faststream",
    "faststream+pydantic",
    "rabbitflow",
    "rabbitflow+middleware",
)
PUBLISHERS = ("aiopika", "faststream", "rabbitflow")
LATENCY = ("aiopika", "faststream+pydantic", "rabbitflow")
RETRY = ("aiopika+pydantic", "rabbitflow")
MEMORY = ("aiopika", "rabbitflow")
"""FastStream drains 1,000,000 messages in over five minutes here, which would push the full
run past 15 minutes: add it with ``--memory-impls aiopika,faststream,rabbitflow``."""
PROCESSES = ("aiopika", "faststream", "rabbitflow")
AT_MOST_ONCE = ("aiopika", "aiormq", "rabbitflow")
"""aio-pika consuming with ``no_ack=True`` (the broker forgets each message as it sends it)
against rabbitflow's ``delivery="at_most_once"`` (one ack per group of arrivals, before
their runs; prefetch kept), with raw aiormq's no-op ``no_ack`` consumer beside them (what
aiormq's own frame reader allows)."""
BATCH = ("aiopika", "rabbitflow")
"""aio-pika consuming one by one (prefetch 100, ack each) against a rabbitflow batch
handler, ``Batch(max_size=100, max_wait="50ms")`` with pydantic items (prefetch 200)."""


STREAM = ("aiopika", "rabbitflow")
"""Both read the same stream queue from its first event (prefetch 100): raw aio-pika acks
each delivery; rabbitflow runs a stream handler taking a pydantic model, with
``consumer_name=`` and its positions in a `SQLiteOffsets` file."""
STREAM_QUEUE = "bench.stream"


def build_cases(
    preset: Preset,
    scenarios: tuple[str, ...],
    repetitions: int | None = None,
    count: int | None = None,
    memory_count: int | None = None,
    memory_impls: tuple[str, ...] = MEMORY,
    prefetches: tuple[int, ...] = (1, 10, 100, 1000),
) -> list[Case]:
    """The cases of a run, in order.

    Args:
        preset: the counts to use.
        scenarios: which of `SCENARIOS` to run.
        repetitions: override the preset's repetitions (memory always runs once).
        count: override every throughput message count (not memory, not latency).
        memory_count: override the memory backlog.
        memory_impls: the implementations of the memory case.
        prefetches: the prefetch values of the consume case.
    """
    reps = repetitions or preset.repetitions

    def n(default: int) -> int:
        return count or default

    cases: list[Case] = []
    if "consume" in scenarios:
        for prefetch in prefetches:
            c = preset.consume_prefetch_1 if prefetch == 1 else preset.consume
            cases.append(
                Case(
                    "consume",
                    f"prefetch {prefetch}",
                    CONSUMERS,
                    count=n(c),
                    prefetch=prefetch,
                    repetitions=reps,
                )
            )
    if "publish" in scenarios:
        cases.append(
            Case(
                "publish",
                "no confirms",
                PUBLISHERS,
                count=n(preset.publish),
                mode="none",
                repetitions=reps,
            )
        )
        cases.append(
            Case(
                "publish",
                "confirm each",
                PUBLISHERS,
                count=n(preset.publish_each),
                mode="each",
                repetitions=reps,
            )
        )
        cases.append(
            Case(
                "publish",
                "pipelined, window 100",
                PUBLISHERS,
                count=n(preset.publish),
                mode="pipelined",
                window=100,
                repetitions=reps,
            )
        )
    if "latency" in scenarios:
        cases.append(
            Case(
                "latency",
                f"{preset.latency_rate}/s for {preset.latency_seconds:g}s",
                LATENCY,
                prefetch=100,
                rate=preset.latency_rate,
                seconds=preset.latency_seconds,
                count=int(preset.latency_rate * preset.latency_seconds),
                repetitions=reps,
            )
        )
    if "retry" in scenarios:
        cases.append(
            Case(
                "retry",
                "fail once, 1ms delay",
                RETRY,
                count=n(preset.retry),
                prefetch=100,
                repetitions=reps,
            )
        )
    if "memory" in scenarios:
        # One run, the implementations side by side: draining the backlog takes minutes,
        # and the figure is a curve, not a rate.
        cases.append(
            Case(
                "memory",
                f"{memory_count or preset.memory:,} backlog, prefetch 1000, side by side",
                memory_impls,
                count=memory_count or preset.memory,
                prefetch=1000,
                repetitions=1,
                side_by_side=True,
            )
        )
    if "processes" in scenarios:
        for procs in (1, 2):
            cases.append(
                Case(
                    "processes",
                    f"{procs} process{'es' if procs > 1 else ''}",
                    PROCESSES,
                    count=n(preset.processes),
                    prefetch=100,
                    processes=procs,
                    repetitions=reps,
                )
            )
    if "at_most_once" in scenarios:
        cases.append(
            Case(
                "at_most_once",
                "aio-pika no_ack vs delivery=at_most_once, prefetch 100",
                AT_MOST_ONCE,
                count=n(preset.consume),
                prefetch=100,
                repetitions=reps,
            )
        )
    if "batch" in scenarios:
        cases.append(
            Case(
                "batch",
                "aio-pika one by one vs Batch(100, 50ms), pydantic items",
                BATCH,
                count=n(preset.consume),
                prefetch=100,
                repetitions=reps,
            )
        )
    if "stream" in scenarios:
        cases.append(
            Case(
                "stream",
                "one stream from first: aio-pika vs pydantic + SQLite positions, prefetch 100",
                STREAM,
                count=n(preset.consume),
                prefetch=100,
                repetitions=reps,
            )
        )
    return cases


def order(impls: tuple[str, ...], repetition: int) -> tuple[str, ...]:
    """Interleave: A B C on even repetitions, C B A on odd ones."""
    return impls if repetition % 2 == 0 else tuple(reversed(impls))
