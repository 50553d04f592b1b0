"""Pure parts of the stream support: --from/--until parsing, the settled-offset tracker
and the in-memory offset store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rabbitflow import MemoryOffsets
from rabbitflow.errors import ConfigError
from rabbitflow.streams.offsets import SettledOffsets, offsets_from, resume_from
from rabbitflow.streams.replay import parse_position, parse_until

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("first", "first"),
        ("last", "last"),
        ("next", "next"),
        ("0", 0),
        ("42", 42),
        ("1h", NOW - timedelta(hours=1)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T10:00:00", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        (
            "2026-12-01T11:00:00+01:00",
            datetime(2026, 12, 1, 11, tzinfo=timezone(timedelta(hours=1))),
        ),
    ],
)
def test_from_positions(text: str, expected: object) -> None:
    assert parse_position(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-1", "1.5h", "", "1 week"])
def test_bad_from_positions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_position(text, NOW)


def test_until_takes_an_offset_or_a_time_only() -> None:
    assert parse_until("17") == 17
    assert parse_until("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    for text in ("1h", "first", "next"):
        with pytest.raises(ValueError, match="invalid --until"):
            parse_until(text)


def test_the_position_waits_for_the_lowest_running_event() -> None:
    t = SettledOffsets()
    for offset in (10, 11, 12, 13):
        t.start(offset)
    assert t.settle(12) is None  # 10 and 11 still run
    assert t.settle(10) == 10
    assert t.settle(13) == 10  # 11 still runs
    assert t.settle(11) == 13
    assert t.running == 0


def test_gaps_in_offsets_do_not_hold_the_position() -> None:
    t = SettledOffsets(position=4)
    t.start(7)
    t.start(20)
    assert t.settle(20) == 4
    assert t.settle(7) == 20


def test_misuse_is_refused() -> None:
    t = SettledOffsets(position=5)
    with pytest.raises(ValueError, match="below the position"):
        t.start(5)
    t.start(6)
    with pytest.raises(ValueError, match="already running"):
        t.start(6)
    with pytest.raises(ValueError, match="not running"):
        t.settle(7)


@pytest.mark.parametrize("seed", range(20))
def test_random_settling_never_passes_a_running_event(seed: int) -> None:
    rng = random.Random(seed)
    t = SettledOffsets()
    offsets = sorted(rng.sample(range(1000), 200))
    pending = list(offsets)
    running: list[int] = []
    while pending or running:
        if pending and (not running or rng.random() < 0.5):
            offset = pending.pop(0)
            t.start(offset)
            running.append(offset)
        else:
            offset = running.pop(rng.randrange(len(running)))
            position = t.settle(offset)
            # Never past an event still running, and as far as everything settled allows.
            assert position is None or all(r > position for r in running)
            started = [o for o in offsets if o not in pending]
            done_prefix = [o for o in started if o < min(running, default=10**9)]
            assert position == (max(done_prefix) if done_prefix else None)
    assert t.position == offsets[-1]


def test_resume_right_after_the_stored_position() -> None:
    assert resume_from(None) is None
    assert resume_from(41) == 42


async def test_memory_offsets() -> None:
    store = MemoryOffsets()
    assert await store.load("a", "s") is None
    await store.store("a", "s", 3)
    await store.store("b", "s", 9)
    await store.store("a", "other", 1)
    assert await store.load("a", "s") == 3
    assert await store.positions("s") == {"a": 3, "b": 9}
    with pytest.raises(ValueError, match="int >= 0"):
        await store.store("a", "s", -1)


def test_offset_store_specs() -> None:
    assert isinstance(offsets_from("memory"), MemoryOffsets)
    with pytest.raises(ConfigError, match="invalid offset store"):
        offsets_from("postgres://x")
    with pytest.raises(ConfigError, match="needs a path"):
        offsets_from("sqlite:")
