"""The headers RabbitMQ 3.10 writes on a dead-lettered message (``x-death`` and
``x-first-death-*``) and its rule for dropping dead-letter cycles. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

REASONS = ("rejected", "expired", "maxlen", "delivery_limit")
"""The ``reason`` values RabbitMQ writes."""


def death_headers(
    headers: Mapping[str, Any] | None,
    *,
    queue: str,
    reason: str,
    exchange: str,
    routing_keys: Sequence[str],
    now: float,
    original_expiration: str | None,
) -> dict[str, Any]:
    """The headers of a message dead-lettered from ``queue``.

    Like RabbitMQ 3.10: ``x-death`` holds one entry per (queue, reason); an existing entry
    has its ``count`` raised and moves to the front, a new one is put first. The
    ``x-first-death-*`` headers are written once, by the first dead-lettering.
    """
    out = dict(headers or {})
    deaths = [dict(d) for d in out.get("x-death") or [] if isinstance(d, Mapping)]
    stamp = datetime.fromtimestamp(int(now), UTC)
    for i, entry in enumerate(deaths):
        if entry.get("queue") == queue and entry.get("reason") == reason:
            entry["count"] = int(entry.get("count", 0)) + 1
            deaths.insert(0, deaths.pop(i))
            break
    else:
        entry = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": stamp,
            "exchange": exchange,
            "routing-keys": list(routing_keys),
        }
        if original_expiration is not None:
            entry["original-expiration"] = original_expiration
        deaths.insert(0, entry)
    out["x-death"] = deaths
    out.setdefault("x-first-death-exchange", exchange)
    out.setdefault("x-first-death-queue", queue)
    out.setdefault("x-first-death-reason", reason)
    return out


def is_cycle(headers: Mapping[str, Any] | None, target: str) -> bool:
    """Whether dead-lettering to ``target`` closes a cycle RabbitMQ drops.

    The broker drops the message for ``target`` when ``target`` already appears in
    ``x-death`` and no dead-lettering on the way was a rejection (a cycle of expiries
    only would loop forever without any client acting).
    """
    deaths = (headers or {}).get("x-death") or []
    queues = [d.get("queue") for d in deaths if isinstance(d, Mapping)]
    if target not in queues:
        return False
    return all(d.get("reason") != "rejected" for d in deaths if isinstance(d, Mapping))
