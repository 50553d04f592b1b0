"""The stable ``x-rabbitflow-*`` header names (DESIGN.md §2 "Message headers", §13), and
the defensive readers of what a producer controls; pure.

Every header, ``x-death`` included, comes from whoever published the message: a reader
here never raises, whatever the value's type, size or nesting, and falls back to what an
absent header means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ATTEMPT = "x-rabbitflow-attempt"
"""On a retry copy, the attempt it will be; on a dead letter, the attempt that failed last."""
QUEUE = "x-rabbitflow-queue"
"""The queue whose handler failed."""
ERROR = "x-rabbitflow-error"
"""``ExceptionType: message`` of the last failure (at most 1 KiB); on an error reply, the
remote failure."""
ERROR_TYPE = "x-rabbitflow-error-type"
"""On an error reply (request-reply): the remote exception's type name alone."""
TRACEBACK = "x-rabbitflow-traceback"
"""The traceback of the last failure, on dead letters (at most 8 KiB, keeping its end)."""
FAILED_AT = "x-rabbitflow-failed-at"
"""ISO-8601 UTC time of the last failure."""
ORIGINAL_EXCHANGE = "x-rabbitflow-original-exchange"
"""Where the message was first published (believed only on a delay queue's return)."""
ORIGINAL_ROUTING_KEY = "x-rabbitflow-original-routing-key"
"""The routing key it was first published with (believed as ``ORIGINAL_EXCHANGE`` is)."""
STREAM_OFFSET = "x-rabbitflow-stream-offset"
"""On a stream consumer's dead letter: the offset of the event in its stream."""
CONSUMER_NAME = "x-rabbitflow-consumer-name"
"""On a stream consumer's dead letter: the consumer whose handler failed. A ``dlq
replay`` appends the event to the stream again; only that consumer runs it."""
REPLAYED_AT = "x-rabbitflow-replayed-at"
"""Set by ``rabbitflow dlq replay`` on the messages it moves back."""

MAX_ATTEMPT = 1_000_000
"""The largest attempt number believed; anything else counts as attempt 1."""
_MAX_DIGITS = len(str(MAX_ATTEMPT))


def read_attempt(headers: Mapping[str, Any] | None) -> int:
    """The delivery's attempt (1-based) from ``x-rabbitflow-attempt``.

    An int, or a short decimal string of one, within 1..`MAX_ATTEMPT` is believed;
    anything else (absent, a float, a bool, a 31-digit number, a table) counts as 1.
    """
    if not headers:
        return 1
    value = headers.get(ATTEMPT)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        text = value.strip()
        if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()):
            return 1
        value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ATTEMPT:
        return value
    return 1


def read_text(headers: Mapping[str, Any] | None, name: str, *, limit: int = 255) -> str | None:
    """A header as text when it is a string (or bytes) of at most ``limit`` bytes."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value.encode("utf-8", "replace")) <= limit:
        return value
    return None


def latest_death_queue(headers: Mapping[str, Any] | None) -> str | None:
    """The queue of the broker's latest dead-lettering (the first ``x-death`` entry)."""
    deaths = (headers or {}).get("x-death")
    if not isinstance(deaths, Sequence) or isinstance(deaths, str | bytes) or not deaths:
        return None
    first = deaths[0]
    if not isinstance(first, Mapping):
        return None
    return read_text(first, "queue")


def from_delay_queue(
    headers: Mapping[str, Any] | None, *, queue: str, exchange: str, routing_key: str
) -> bool:
    """Whether a delivery of ``queue`` came back from one of its own delay queues, or was
    moved back by ``rabbitflow dlq replay``: only then are the original-exchange and
    -routing-key headers believed.

    Both come through the default exchange with the queue's own name as routing key (a
    delay queue dead-letters there; replay publishes there). A delay queue's return also
    carries the broker's ``x-death`` naming ``<queue>.retry.<delay>``; a replay carries
    ``x-rabbitflow-replayed-at``. A message published through any other exchange or key is
    a first delivery, whatever its headers say.
    """
    if not headers or exchange != "" or routing_key != queue:
        return False
    death = latest_death_queue(headers)
    if death is not None and death.startswith(f"{queue}.retry."):
        return True
    return REPLAYED_AT in headers


def republishable(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers as received, made encodable again for a retry or dead-letter copy.

    The AMQP decoder returns a long string that is not UTF-8 as ``bytes``, which the
    encoder refuses: it goes back as a byte array (the same bytes). A value nested too
    deep to walk is replaced by a note rather than failing the copy.
    """
    out: dict[str, Any] = {}
    for key, value in headers.items():
        try:
            out[str(key)] = _encodable(value)
        except RecursionError:
            out[str(key)] = "(dropped by rabbitflow: nested too deeply to copy)"
    return out


def _encodable(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping):
        return {str(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


__all__ = [
    "ATTEMPT",
    "CONSUMER_NAME",
    "ERROR",
    "ERROR_TYPE",
    "FAILED_AT",
    "MAX_ATTEMPT",
    "ORIGINAL_EXCHANGE",
    "ORIGINAL_ROUTING_KEY",
    "QUEUE",
    "REPLAYED_AT",
    "STREAM_OFFSET",
    "TRACEBACK",
    "from_delay_queue",
    "latest_death_queue",
    "read_attempt",
    "read_text",
    "republishable",
]
