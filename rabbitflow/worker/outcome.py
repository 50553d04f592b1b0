"""What happens to a delivery after its handler ran: a pure decision, and the headers of
the retry or dead-letter copy (DESIGN.md §2, "Message headers")."""

from __future__ import annotations

import traceback as tb
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, NamedTuple

from rabbitflow import headers as h
from rabbitflow.errors import BodyDecodeError
from rabbitflow.topology.schema import RetryPolicy

MAX_ERROR_BYTES = 1024
MAX_TRACEBACK_BYTES = 8 * 1024
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


class Reject(Exception):
    """Raise in a handler to dead-letter the message now, without retrying.

    For poison input: a message that can never succeed, however often it is tried.
    """


class Action(Enum):
    """How a delivery is settled."""

    ACK = "ack"
    """The handler succeeded."""
    RETRY = "retry"
    """Publish a copy to the delay queue for this attempt, then ack."""
    DEAD_LETTER = "dead_letter"
    """Publish a copy with the error to the dead-letter exchange, then ack."""
    NACK = "nack"
    """Nack without requeue: the queue has no dead letters (the broker may dead-letter it
    through the queue's own arguments, else drops it)."""
    REQUEUE = "requeue"
    """Give the message back to the queue untouched (shutdown, lost connection)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one delivery, and what the copy needs to say."""

    action: Action
    delay_ms: int | None = None
    """For RETRY: how long the copy waits in its delay queue."""


ACK = Decision(Action.ACK)

OutcomeKind = Literal["ack", "retry", "dead_letter", "nack", "requeue", "dropped"]
"""How a delivery ended (`Outcome.kind`)."""


class Outcome(NamedTuple):
    """What was done with one delivery, as `@app.on_settled` observers are told after the
    broker saw it (DESIGN.md §7). Immutable.

    A named tuple rather than a frozen dataclass: one is made per delivery on the hot
    path, and a tuple is built five times faster.
    """

    kind: OutcomeKind
    """``ack``, ``retry``, ``dead_letter``, ``nack``, ``requeue`` (shutdown, a lost
    channel, or a copy that could not be published) or ``dropped`` (at-most-once)."""
    attempt: int
    """The attempt that ran (1-based)."""
    delay: float | None = None
    """For a retry: seconds the copy waits in its delay queue."""
    destination: str | None = None
    """The queue or exchange the copy went to (the delay queue, the dead-letter
    exchange), else None."""
    error: str | None = None
    """``Type: message`` of the failure, else None."""
    seconds: float | None = None
    """How long the run took (middlewares and handler); None when nothing ran."""
    exception: BaseException | None = None
    """The exception itself, for observers that report it (Sentry-style); None on ack."""


def decide(
    error: BaseException,
    *,
    attempt: int,
    retry: RetryPolicy | None,
    dead_letters: bool,
    filters: Mapping[type[BaseException], bool] | None = None,
) -> Decision:
    """Choose the action after a handler (or a middleware) failed on attempt ``attempt``
    (1-based): the one place an outcome is decided (DESIGN.md §2, §7).

    `Reject` and decode failures are dead-lettered at once. Any other exception is looked
    up in ``filters`` (class → retry?, from ``retry_on`` and ``dead_letter_on``) by the
    nearest class of its MRO: retried while the policy allows, then dead-lettered; not
    found, dead-lettered now. Without filters every `Exception` is retried.
    """
    final = Action.DEAD_LETTER if dead_letters else Action.NACK
    if isinstance(error, Reject | BodyDecodeError):
        return Decision(final)
    if filters is not None and not retryable(error, filters):
        return Decision(final)
    if retry is not None and attempt <= retry.max_retries:
        return Decision(Action.RETRY, retry.delay_for(attempt))
    return Decision(final)


def retryable(error: BaseException, filters: Mapping[type[BaseException], bool]) -> bool:
    """Whether the nearest class of ``error``'s MRO found in ``filters`` says retry
    (as starlette looks up exception handlers); False when none is found."""
    for cls in type(error).__mro__:
        found = filters.get(cls)
        if found is not None:
            return found
    return False


def describe(error: BaseException) -> str:
    """``ExceptionType: message``, cut to at most 1 KiB of UTF-8."""
    try:
        detail = str(error)
    except Exception:  # an exception whose __str__ itself raises
        detail = "(its message could not be read)"
    text = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return _cut(text, MAX_ERROR_BYTES, keep_end=False)


def format_traceback(error: BaseException) -> str:
    """The traceback, cut to at most 8 KiB keeping its end (the innermost frames)."""
    text = "".join(tb.format_exception(error))
    return _cut(text, MAX_TRACEBACK_BYTES, keep_end=True)


def failure_headers(
    headers: Mapping[str, Any] | None,
    *,
    queue: str,
    attempt: int,
    error: BaseException,
    exchange: str,
    routing_key: str,
    with_traceback: bool,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Headers for a retry copy (``attempt`` = the next attempt) or a dead letter
    (``attempt`` = the one that failed): every original header kept except the broker's
    own ``x-death`` family, which rabbitflow never republishes. ``exchange`` and
    ``routing_key`` are where the message was first published (`Message.exchange` and
    `Message.routing_key`): they replace whatever original-* headers it carried."""
    kept = {k: v for k, v in (headers or {}).items() if not k.startswith(_BROKER_HEADERS)}
    out = h.republishable(kept)
    out[h.ORIGINAL_EXCHANGE] = exchange
    out[h.ORIGINAL_ROUTING_KEY] = routing_key
    out[h.ATTEMPT] = attempt
    out[h.QUEUE] = queue
    out[h.ERROR] = describe(error)
    out[h.FAILED_AT] = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    if with_traceback:
        out[h.TRACEBACK] = format_traceback(error)
    else:
        out.pop(h.TRACEBACK, None)
    return out


def _cut(text: str, limit: int, *, keep_end: bool) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = "…"
    room = limit - len(marker.encode())
    if keep_end:
        return marker + data[-room:].decode("utf-8", "ignore")
    return data[:room].decode("utf-8", "ignore") + marker
