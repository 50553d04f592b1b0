"""The delay ladder's section of ``rabbitflow status`` from the management API's queue
list (no broker)."""

from __future__ import annotations

from rabbitflow.amqp.delay_status import (
    busy_levels,
    hold_text,
    is_ladder_queue,
    ladder_from_management,
    summary,
)
from rabbitflow.amqp.status import layout_from_names
from rabbitflow.topology.delay import LEVELS, level_name

LADDER = [{"name": level_name(k), "messages": 0, "messages_dlx": 0} for k in range(LEVELS)]


def test_ladder_queues_are_recognised_by_name() -> None:
    assert is_ladder_queue("rabbitflow.delay.level.00")
    assert is_ladder_queue("rabbitflow.delay.level.21")
    assert not is_ladder_queue("rabbitflow.delay.level.22")
    assert not is_ladder_queue("rabbitflow.delay.deliver")
    assert not is_ladder_queue("jobs")


def test_levels_holding_messages_are_counted_and_summed() -> None:
    queues = [dict(q) for q in LADDER]
    queues[2] |= {"messages": 14, "messages_dlx": 3}
    queues[11] |= {"messages": 1}
    ladder = ladder_from_management([*queues, {"name": "jobs", "messages": 9}], expected=True)
    assert ladder is not None
    assert (ladder.waiting, ladder.dead_lettering, ladder.missing) == (15, 3, ())
    assert [level.level for level in busy_levels(ladder)] == [2, 11]
    assert summary(ladder) == (
        "delay ladder: 15 message(s) waiting, 3 moving to the level below in 2 of 22 levels"
    )


def test_missing_levels_are_flagged_when_the_topology_expects_a_ladder() -> None:
    ladder = ladder_from_management(LADDER[1:], expected=True)
    assert ladder is not None and ladder.missing == (0,)
    assert [level.level for level in busy_levels(ladder)] == [0]
    assert summary(ladder).endswith("missing levels: 00 (run declare)")
    assert ladder_from_management([{"name": "jobs"}], expected=False) is None
    empty = ladder_from_management([], expected=True)
    assert empty is not None and len(empty.missing) == LEVELS


def test_json_has_every_level() -> None:
    ladder = ladder_from_management(LADDER, expected=False)
    assert ladder is not None
    out = ladder.as_json()
    assert out["delay_ladder"] == "rabbitflow.delay.level.*"
    assert [level["seconds"] for level in out["levels"]][:4] == [1, 2, 4, 8]
    assert (out["waiting"], out["dead_lettering"], out["missing"]) == (0, 0, [])


def test_hold_times_read_as_durations() -> None:
    assert [hold_text(1 << k) for k in (0, 5, 11, 21)] == ["1s", "32s", "34m8s", "24d6h"]


def test_without_a_topology_ladder_queues_are_not_work_queues() -> None:
    layout = layout_from_names(["jobs", level_name(0), level_name(21)])
    assert layout.work_queues == ("jobs",)
