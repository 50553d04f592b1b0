"""``rabbitflow status``: what the ``rabbitflow.delay.*`` ladder holds (DESIGN.md §8,
docs/delayed-delivery.md), from the management API or, without it, passive declares.

A delayed message waits in the queues of the levels whose bit its delay has set, so the
ladder's depth is the number of delayed messages not yet due (plus, briefly, those
moving between levels). The management API also tells the messages a level has expired
but not yet handed on (``messages_dlx``: at-least-once dead-lettering waits for the
level below to confirm them); AMQP tells only the ready ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.management import JsonObject
from rabbitflow.topology.delay import LEVELS, PREFIX, level_name

LEVEL_PREFIX = f"{PREFIX}.level."


@dataclass(frozen=True)
class DelayLevel:
    """One level of the ladder; None where the source cannot tell."""

    level: int
    seconds: int
    """How long the level holds a message (``2**level``)."""
    exists: bool = True
    waiting: int | None = None
    """Messages held for the level's time (ready and unacked)."""
    dead_lettering: int | None = None
    """Messages the level expired that the level below has not confirmed yet (management
    API only)."""


@dataclass(frozen=True)
class DelayLadder:
    """Every level of the ladder, lowest first."""

    levels: tuple[DelayLevel, ...]

    @property
    def waiting(self) -> int:
        return sum(level.waiting or 0 for level in self.levels)

    @property
    def dead_lettering(self) -> int:
        return sum(level.dead_lettering or 0 for level in self.levels)

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(level.level for level in self.levels if not level.exists)

    def as_json(self) -> dict[str, Any]:
        """The ladder as one JSON object (a line of its own in ``status --json``)."""
        return {
            "delay_ladder": f"{LEVEL_PREFIX}*",
            "waiting": self.waiting,
            "dead_lettering": self.dead_lettering,
            "missing": list(self.missing),
            "levels": [asdict(level) for level in self.levels],
        }


def is_ladder_queue(name: str) -> bool:
    """``rabbitflow.delay.level.NN``."""
    rest = name.removeprefix(LEVEL_PREFIX)
    return rest != name and rest.isdigit() and int(rest) < LEVELS


def ladder_from_management(queues: Sequence[JsonObject], *, expected: bool) -> DelayLadder | None:
    """The ladder's levels from ``GET /api/queues/{vhost}``; None when the vhost has none
    of them and ``expected`` (a topology with ``delayed: true`` exchanges) is False."""
    by_name = {str(q["name"]): q for q in queues if is_ladder_queue(str(q.get("name", "")))}
    if not by_name and not expected:
        return None
    levels = []
    for k in range(LEVELS):
        q = by_name.get(level_name(k))
        if q is None:
            levels.append(DelayLevel(k, 1 << k, exists=False))
            continue
        levels.append(
            DelayLevel(
                k,
                1 << k,
                waiting=_count(q, "messages"),
                dead_lettering=_count(q, "messages_dlx"),
            )
        )
    return DelayLadder(tuple(levels))


async def ladder_from_amqp(connection: AbstractConnection) -> DelayLadder:
    """The ladder's levels from passive declares (ready messages only)."""
    levels = []
    for k in range(LEVELS):
        ready = await _ready(connection, level_name(k))
        levels.append(DelayLevel(k, 1 << k, exists=ready is not None, waiting=ready))
    return DelayLadder(tuple(levels))


def busy_levels(ladder: DelayLadder) -> Iterable[DelayLevel]:
    """The levels worth a row: those holding something, and missing ones."""
    return (
        level
        for level in ladder.levels
        if not level.exists or level.waiting or level.dead_lettering
    )


def summary(ladder: DelayLadder) -> str:
    """One line: ``delay ladder: 23 messages waiting in 2 of 22 levels``."""
    busy = [level for level in ladder.levels if level.waiting or level.dead_lettering]
    text = f"delay ladder: {ladder.waiting} message(s) waiting"
    if ladder.dead_lettering:
        text += f", {ladder.dead_lettering} moving to the level below"
    text += f" in {len(busy)} of {LEVELS} levels"
    if ladder.missing:
        text += f"; missing levels: {', '.join(f'{k:02d}' for k in ladder.missing)} (run declare)"
    return text


def hold_text(seconds: int) -> str:
    """A level's hold time for people: ``4s``, ``34m8s``, ``12d3h``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2])


def _count(q: Mapping[str, Any], key: str) -> int | None:
    value = q.get(key)
    return None if value is None else int(value)


async def _ready(connection: AbstractConnection, name: str) -> int | None:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None  # the broker closed the channel
    count = int(queue.declaration_result.message_count or 0)
    await channel.close()
    return count


__all__ = [
    "DelayLadder",
    "DelayLevel",
    "busy_levels",
    "hold_text",
    "is_ladder_queue",
    "ladder_from_amqp",
    "ladder_from_management",
    "summary",
]
