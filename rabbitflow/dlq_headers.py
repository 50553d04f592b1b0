"""Reading and rewriting dead-letter headers (DESIGN.md §2 "Message headers"); pure.

A dead letter is either rabbitflow's copy (``x-rabbitflow-*`` headers) or a message the
broker dead-lettered itself (rejected, expired, over a limit), which carries only the
broker's ``x-death`` list, most recent entry first.
"""

from __future__ import annotations

import base64
import fnmatch
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from rabbitflow.headers import (
    ATTEMPT,
    ERROR,
    FAILED_AT,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    QUEUE,
    REPLAYED_AT,
    read_attempt,
)

_DROPPED = {ATTEMPT, "x-death", "x-delivery-count"}
_DROPPED_PREFIXES = ("x-first-death-", "x-last-death-")
BODY_PREVIEW = 4096
"""Bytes of each body shown by ``dlq list``."""


def text(value: Any) -> str:
    """A header value as text (AMQP long strings may arrive as bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def first_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first entry of ``x-death`` (the broker's latest dead-lettering), if any."""
    deaths = headers.get("x-death")
    if isinstance(deaths, Sequence) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return None


def dead_letter_target(headers: Mapping[str, Any]) -> str | None:
    """The queue a dead letter came from: ``x-rabbitflow-queue``, else the queue of the
    first ``x-death`` entry, else ``x-first-death-queue``."""
    if headers.get(QUEUE):
        return text(headers[QUEUE])
    death = first_death(headers)
    if death is not None and death.get("queue"):
        return text(death["queue"])
    if headers.get("x-first-death-queue"):
        return text(headers["x-first-death-queue"])
    return None


def parse_where(items: Sequence[str]) -> list[tuple[str, str]]:
    """``HEADER=VALUE`` options as pairs.

    Raises:
        ValueError: for an item without ``=`` or with an empty header name.
    """
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"--where {item!r}: expected HEADER=VALUE, "
                "e.g. --where x-rabbitflow-error='TimeoutError*'"
            )
        pairs.append((name.strip(), value))
    return pairs


def matches(headers: Mapping[str, Any], where: Sequence[tuple[str, str]]) -> bool:
    """Whether every (header, pattern) pair matches; patterns take ``*``, ``?``, ``[...]``."""
    return all(
        name in headers and fnmatch.fnmatchcase(text(headers[name]), pattern)
        for name, pattern in where
    )


def replay_headers(headers: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The headers of a replayed copy: attempt count and the broker's death records
    dropped, ``x-rabbitflow-replayed-at`` added, everything else kept.

    For a message the broker dead-lettered, the original exchange and routing key are
    taken from its ``x-death`` entry, so handlers see where it was first published.
    """
    out = {
        k: v
        for k, v in headers.items()
        if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)
    }
    death = first_death(headers)
    if death is not None and ORIGINAL_EXCHANGE not in out:
        out[ORIGINAL_EXCHANGE] = text(death.get("exchange", ""))
        keys = death.get("routing-keys") or [""]
        out[ORIGINAL_ROUTING_KEY] = text(keys[0])
    out[REPLAYED_AT] = now.isoformat()
    return out


def describe(properties: Mapping[str, Any], body: bytes, position: int) -> dict[str, Any]:
    """One dead letter as a JSON-able summary (a line of ``dlq list --json``)."""
    headers: Mapping[str, Any] = properties.get("headers") or {}
    death = first_death(headers)
    error = text(headers[ERROR]) if ERROR in headers else None
    failed_at = text(headers[FAILED_AT]) if FAILED_AT in headers else None
    exchange = headers.get(ORIGINAL_EXCHANGE)
    routing_key = headers.get(ORIGINAL_ROUTING_KEY)
    if death is not None:
        error = error or f"dead-lettered by the broker: {text(death.get('reason', '?'))}"
        failed_at = failed_at or (text(death["time"]) if "time" in death else None)
        exchange = exchange if exchange is not None else death.get("exchange")
        if routing_key is None:
            routing_key = (death.get("routing-keys") or [None])[0]
    preview, encoding = _body(body)
    return {
        "position": position,
        "queue": dead_letter_target(headers),
        "message_id": properties.get("message_id"),
        "correlation_id": properties.get("correlation_id"),
        "error": error,
        "attempt": read_attempt(headers),
        "failed_at": failed_at,
        "exchange": text(exchange) if exchange is not None else None,
        "routing_key": text(routing_key) if routing_key is not None else None,
        "content_type": properties.get("content_type"),
        "size": len(body),
        "body": preview,
        "body_encoding": encoding,
        "headers": jsonable(headers),
    }


def jsonable(value: Any) -> Any:
    """Header values made JSON-able (bytes as text, times as ISO-8601)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | datetime):
        return text(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _body(body: bytes) -> tuple[str, str]:
    part = body[:BODY_PREVIEW]
    try:
        return part.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(part).decode("ascii"), "base64"
