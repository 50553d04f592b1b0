"""Delayed delivery built of TTL queues and dead-lettering only (DESIGN.md §8): the
``rabbitflow.delay.*`` ladder. Pure: names, declarations and per-message routing.

A delay of ``d`` whole seconds is written in binary, ``d = Σ bit_k · 2^k`` for levels
``k = LEVELS-1 … 0``. Level ``k`` is a headers exchange ``rabbitflow.delay.level.KK`` with
two bindings: a message whose header ``rabbitflow-delay-KK`` is ``"1"`` goes to the quorum
queue of the same name, which holds every message exactly ``2^k`` s (``x-message-ttl``)
and then dead-letters it to level ``k-1``; a message whose bit is ``"0"`` is passed on at
once by an exchange-to-exchange binding. Below level 0 is ``rabbitflow.delay.deliver``, a
headers exchange bound to each exchange that may receive delayed messages on the header
``rabbitflow-delay-target``. Headers exchanges ignore the routing key and dead-lettering
keeps it, so the message reaches its exchange with the routing key it was published with.

Every queue of the ladder has one fixed TTL, so its messages expire in the order they
came in: different delays never block one another. Quorum queues with at-least-once
dead-lettering keep a message through broker restarts and move it on only once the next
queue confirmed it. Header names have no ``x-`` prefix because headers exchanges do not
match ``x-`` keys.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

LEVELS = 22
"""Levels 0…21: delays up to ``2**22 - 1`` s (48.5 days)."""
MAX_DELAY = (1 << LEVELS) - 1
"""The longest delay, in seconds."""
PREFIX = "rabbitflow.delay"
DELIVER = f"{PREFIX}.deliver"
"""The exchange below level 0, bound to each exchange that can receive delayed messages."""
TARGET_HEADER = "rabbitflow-delay-target"
DELAYED_UNTIL = "x-rabbitflow-delayed-until"


def level_name(k: int) -> str:
    """The exchange and the queue of level ``k``: ``rabbitflow.delay.level.07``."""
    return f"{PREFIX}.level.{k:02d}"


def bit_header(k: int) -> str:
    return f"rabbitflow-delay-{k:02d}"


def entry() -> str:
    """Where a delayed message is published: the top level's exchange."""
    return level_name(LEVELS - 1)


def whole_seconds(delay: float) -> int:
    """The delay the ladder carries: sub-second values round up to 1 s.

    Raises:
        ValueError: a delay not above zero or over `MAX_DELAY`.
    """
    if not delay > 0:
        raise ValueError(f"delay must be above zero, got {delay!r}")
    seconds = max(1, math.ceil(delay - 1e-9))
    if seconds > MAX_DELAY:
        raise ValueError(f"delay of {seconds}s exceeds the longest, {MAX_DELAY}s (48 days)")
    return seconds


def headers_for(exchange: str, seconds: int, now: datetime | None = None) -> dict[str, Any]:
    """The headers that route a message through the ladder to ``exchange``."""
    now = now or datetime.now(UTC)
    due = (now + timedelta(seconds=seconds)).astimezone(UTC)
    out: dict[str, Any] = {bit_header(k): "1" if seconds >> k & 1 else "0" for k in range(LEVELS)}
    out[TARGET_HEADER] = exchange
    out[DELAYED_UNTIL] = due.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return out


def ladder_headers() -> frozenset[str]:
    """The routing headers `headers_for` adds (besides `DELAYED_UNTIL`)."""
    return frozenset([TARGET_HEADER, *(bit_header(k) for k in range(LEVELS))])


def ladder_queue_arguments(k: int) -> dict[str, Any]:
    below = level_name(k - 1) if k > 0 else DELIVER
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": (1 << k) * 1000,
        "x-dead-letter-exchange": below,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def ladder_bindings(k: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(source, destination, destination type, arguments) of level ``k``."""
    below = level_name(k - 1) if k > 0 else DELIVER
    return [
        (level_name(k), level_name(k), "queue", {"x-match": "all", bit_header(k): "1"}),
        (level_name(k), below, "exchange", {"x-match": "all", bit_header(k): "0"}),
    ]


def deliver_binding(exchange: str) -> tuple[str, str, str, dict[str, Any]]:
    return (DELIVER, exchange, "exchange", {"x-match": "all", TARGET_HEADER: exchange})
