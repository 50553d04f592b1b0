"""The autoscaler's decisions (DESIGN.md §8), sample by sample."""

from __future__ import annotations

import pytest

from rabbitflow.errors import ConfigError
from rabbitflow.worker.autoscale import Autoscaler, Sample, ScalePolicy, parse_processes


def test_parse_processes() -> None:
    assert parse_processes("3") == (3, 3)
    assert parse_processes("1:8") == (1, 8)
    for bad in ("0", "4:2", "a:b", "1:", "1:300"):
        with pytest.raises(ConfigError, match="--processes"):
            parse_processes(bad)


def test_grows_only_on_a_sustained_busy_backlog_and_never_past_max() -> None:
    s = Autoscaler(ScalePolicy(1, 2, backlog=10, grow_after=2, idle_after=5))
    busy = Sample(ready=100, unacked=4)
    assert s.decide(busy, 1, 0) is None
    assert s.decide(Sample(100, 0), 1, 1) is None  # not busy: the streak restarts
    assert s.decide(busy, 1, 2) is None
    step = s.decide(busy, 1, 3)
    assert step is not None and step[0] == 1 and "backlog of 100" in step[1]
    assert s.decide(busy, 2, 4) is None and s.decide(busy, 2, 5) is None  # at max


def test_shrinks_after_sustained_idleness_one_at_a_time_never_below_min() -> None:
    s = Autoscaler(ScalePolicy(1, 4, idle_after=5))
    idle = Sample(0, 0)
    assert s.decide(idle, 3, 0) is None
    assert s.decide(Sample(0, 1), 3, 3) is None  # busy again: idleness restarts
    assert s.decide(idle, 3, 4) is None
    assert s.decide(idle, 3, 8) is None
    step = s.decide(idle, 3, 9)
    assert step is not None and step[0] == -1 and "idle for 5s" in step[1]
    assert s.decide(idle, 2, 10) is None  # the next one only after another full period
    assert s.decide(idle, 2, 14) == (-1, step[1])
    assert s.decide(idle, 1, 100) is None  # at min
    assert s.decide(None, 3, 200) is None  # no sample: no change
