"""Every exception rabbitflow raises, under one base class.

`Reject` is not here: it is control flow a handler raises on purpose, not a failure
of rabbitflow (see `rabbitflow.worker.outcome`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class RabbitflowError(Exception):
    """Base class of every error rabbitflow raises; the CLI prints it as one line."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem, located in a topology file."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TopologyError(RabbitflowError):
    """Raised when topology files are unreadable or invalid; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(RabbitflowError):
    """Raised for a bad setting or option (an invalid URL, an unknown handler queue)."""


class BrokerUnavailable(RabbitflowError):
    """Raised when no broker answers at the configured URL(s) within the connect timeout."""


class DeclareConflict(RabbitflowError):
    """Raised when an object on the broker differs from its declaration in the files."""

    def __init__(
        self, vhost: str, kind: str, name: str, argument: str, existing: object, declared: object
    ) -> None:
        self.vhost, self.kind, self.name = vhost, kind, name
        self.argument, self.existing, self.declared = argument, existing, declared
        super().__init__(
            f"vhost {vhost!r}: {kind} {name!r} exists with {argument}={_shown(existing)}, "
            f"the files declare {argument}={_shown(declared)}; delete it or align the files"
        )


def _shown(value: object) -> str:
    """A value in an error line; None is an argument the object does not set."""
    return "(not set)" if value is None else repr(value)


class DeclareFailed(RabbitflowError):
    """Raised when the broker refuses a declaration for a reason other than a conflict
    (access refused, a binding to a missing exchange, an unknown exchange type)."""


class ManagementError(RabbitflowError):
    """Raised when the RabbitMQ management HTTP API is unreachable or refuses a request."""


class ManagementUnavailable(ManagementError):
    """Raised when the management API does not answer (plugin off, wrong port, timeout)."""


class BrokerError(RabbitflowError):
    """Raised when the broker closes a channel or stops answering in the middle of a command."""


class QueueNotFound(RabbitflowError):
    """Raised when a command needs a queue (a DLQ, a work queue) the broker does not have."""


class PublishError(RabbitflowError):
    """Base class of the ways a publish can fail to be confirmed."""


class PublishNacked(PublishError):
    """Raised when the broker nacks a publish (for instance a full `reject-publish` queue)."""


class Unroutable(PublishError):
    """Raised when a mandatory message matched no queue and the broker returned it."""

    def __init__(self, exchange: str, routing_key: str, reply_text: str = "NO_ROUTE") -> None:
        self.exchange, self.routing_key = exchange, routing_key
        super().__init__(
            f"unroutable: no queue is bound to exchange {exchange!r} "
            f"for routing key {routing_key!r} ({reply_text})"
        )


class PublishTimeout(PublishError):
    """Raised when the broker neither confirms nor nacks within `publish_timeout`.

    The message may or may not have been accepted: the outcome is unknown.
    """


class MessageTooLarge(PublishError):
    """Raised before sending a body larger than `max_message_size`."""


class ExchangeNotFound(PublishError):
    """Raised when publishing to an exchange the broker does not have."""


class RequestTimeout(RabbitflowError):
    """Raised when no reply to `App.request` arrives within its timeout."""


class RemoteError(RabbitflowError):
    """Raised by `request` when the responder's handler failed (raised, `Reject` included,
    or could not decode the request): the reply carried ``x-rabbitflow-error``.

    Attributes:
        type: the remote exception's type name (``x-rabbitflow-error-type``).
        message: its message, without the type.
    """

    def __init__(self, type: str, message: str) -> None:
        self.type, self.message = type, message
        super().__init__(f"{type}: {message}" if message else type)


class HandlerError(RabbitflowError):
    """Raised for a handler that cannot be registered (unknown queue, a queue with a
    handler already, bad signature or options), at registration, `App.include_router`
    or `App.start`."""


class LifespanError(RabbitflowError):
    """Raised by `App.start` when entering the app's ``lifespan`` failed: no consumer
    was started, the connection is closed; the message names the exception."""


class BodyDecodeError(RabbitflowError):
    """Raised when a delivery's body cannot be decoded or validated for its handler;
    the message is dead-lettered at once with this error, never retried."""


class HandlerTimeout(RabbitflowError):
    """Raised into the outcome of a handler that overran its ``timeout``; counts as a
    failure and is retried per the queue's policy."""


class LeaseBusy(RabbitflowError):
    """Raised when another worker still holds the idempotency lease of a message's key
    after waiting the allowed time; the message is retried, never skipped."""

    def __init__(self, key: str, waited: float) -> None:
        self.key, self.waited = key, waited
        super().__init__(
            f"idempotency key {key!r} is still being processed by another worker after "
            f"{waited:.1f}s; retrying later (raise max_wait if handlers run longer)"
        )


class WaitTimeout(RabbitflowError):
    """Raised by the test harness (`rabbitflow.testing`) when queues did not become idle,
    or a condition did not hold, within the time allowed."""
