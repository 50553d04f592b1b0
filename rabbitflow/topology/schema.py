"""The topology model: frozen pydantic declarations read from YAML (DESIGN.md §1).

The schema checks types and ranges; `validate.py` checks meaning (references, options that
belong to another queue type, collisions with generated names).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from rabbitflow.topology.policies import Policy
from rabbitflow.units import format_duration, parse_duration, parse_size

MAX_BROKER_MS = 2**32 - 1
"""The longest TTL, ``expires`` or delay RabbitMQ accepts, in ms (about 49.7 days)."""
MAX_AMQP_INT = 2**63 - 1
"""The largest integer an AMQP table (queue arguments) can carry."""


def _within_broker_ms(ms: int) -> int:
    if ms > MAX_BROKER_MS:
        raise ValueError(f"must be at most {MAX_BROKER_MS} ms (about 49 days), the broker's limit")
    return ms


def _within_amqp_int(value: int) -> int:
    if value > MAX_AMQP_INT:
        raise ValueError(f"must be at most {MAX_AMQP_INT}, AMQP's largest integer")
    return value


Duration = Annotated[int, BeforeValidator(parse_duration), AfterValidator(_within_broker_ms)]
"""Milliseconds; written as ``250ms``, ``1s``, ``5m``, ``1h``, ``7d`` or an int; at most
`MAX_BROKER_MS`."""
AmqpInt = Annotated[int, AfterValidator(_within_amqp_int)]
"""An integer the broker receives as a queue argument."""

Size = Annotated[int, BeforeValidator(parse_size), AfterValidator(_within_amqp_int)]
"""Bytes; written as an int or with B/KiB/MiB/GiB (and KB/MB/GB)."""

PositiveDuration = Annotated[Duration, Field(gt=0)]
Arguments = dict[str, Any]
"""Raw `x-` arguments, passed to the broker as written and merged last."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class ExchangeType(StrEnum):
    """How an exchange routes."""

    DIRECT = "direct"
    """To queues whose binding key equals the routing key."""
    FANOUT = "fanout"
    """To every bound queue, ignoring the routing key."""
    TOPIC = "topic"
    """By dotted patterns with ``*`` (one word) and ``#`` (zero or more words)."""
    HEADERS = "headers"
    """By message headers, matching ``all`` or ``any`` of the binding's headers."""
    CONSISTENT_HASH = "x-consistent-hash"
    """By a hash of the routing key (or a header); needs the consistent-hash plugin."""


class QueueType(StrEnum):
    """RabbitMQ's queue types."""

    CLASSIC = "classic"
    """The default single-node queue."""
    QUORUM = "quorum"
    """Raft-replicated; the choice for data that must survive a node."""
    STREAM = "stream"
    """An append-only log read non-destructively; no retries or dead letters."""


class Overflow(StrEnum):
    """What a full queue (`max_length`/`max_length_bytes`) does with a new message."""

    DROP_HEAD = "drop-head"
    """Drop (or dead-letter) the oldest message: the producer never notices."""
    REJECT_PUBLISH = "reject-publish"
    """Nack the publish: the producer sees `PublishNacked` and can back off."""
    REJECT_PUBLISH_DLX = "reject-publish-dlx"
    """Nack the publish and dead-letter the rejected message (classic only)."""


class Backoff(StrEnum):
    """How the delay grows between retries."""

    EXPONENTIAL = "exponential"
    """``delay * multiplier ** (n - 1)``."""
    LINEAR = "linear"
    """``delay * n``."""
    FIXED = "fixed"
    """``delay`` every time."""


Match = Literal["all", "any", "all-with-x", "any-with-x"]
"""A headers binding's ``x-match``: ``all`` or ``any`` of its headers; the ``-with-x``
variants (RabbitMQ 3.10) also compare headers whose name starts with ``x-``."""


class Exchange(_Model):
    """An exchange, keyed by its name under ``exchanges:``."""

    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    alternate_exchange: str | None = None
    delayed: bool = False
    """Can receive delayed messages (``publish(..., delay=)``): the ``rabbitflow.delay.*``
    ladder is declared and bound to this exchange (docs/delayed-delivery.md)."""
    arguments: Arguments = Field(default_factory=dict)


class Binding(_Model):
    """A queue's binding to an exchange."""

    exchange: str
    routing_key: str | None = None
    routing_keys: list[str] | None = None
    match: Match | None = None
    headers: dict[str, Any] | None = None
    arguments: Arguments = Field(default_factory=dict)

    @field_validator("routing_keys")
    @classmethod
    def _not_empty(cls, keys: list[str] | None) -> list[str] | None:
        if keys is not None and not keys:
            raise ValueError("routing_keys must list at least one key")
        return keys

    @property
    def keys(self) -> tuple[str, ...]:
        """The binding keys: one binding is declared per key."""
        if self.routing_keys is not None:
            return tuple(self.routing_keys)
        return (self.routing_key or "",)


class ExchangeBinding(_Model):
    """An exchange-to-exchange binding under ``bindings:``."""

    source: str
    destination: str
    routing_key: str = ""
    match: Match | None = None
    headers: dict[str, Any] | None = None
    arguments: Arguments = Field(default_factory=dict)


class RetryPolicy(_Model):
    """When and how often a failed message is tried again, through TTL delay queues."""

    max_retries: AmqpInt = Field(default=3, ge=0)
    backoff: Backoff = Backoff.EXPONENTIAL
    delay: PositiveDuration = 1000
    multiplier: float = Field(default=2.0, gt=0)
    max_delay: PositiveDuration | None = None
    delays: list[PositiveDuration] | None = Field(default=None, min_length=1)

    def delay_for(self, retry: int) -> int:
        """The delay in ms before retry number ``retry`` (1 for the first retry).

        Never overflows: an exponential delay past every broker limit is `_HUGE_MS`
        (validation refuses a schedule that reaches it without ``max_delay``).
        """
        retry = max(1, retry)
        if self.delays is not None:
            ms = self.delays[min(retry, len(self.delays)) - 1]
        elif self.backoff is Backoff.EXPONENTIAL:
            ms = _exponential(self.delay, self.multiplier, retry - 1)
        elif self.backoff is Backoff.LINEAR:
            ms = self.delay * retry
        else:
            ms = self.delay
        return min(ms, self.max_delay) if self.max_delay is not None else ms

    @property
    def schedule(self) -> tuple[int, ...]:
        """The delay before each retry, in ms: ``schedule[0]`` precedes attempt 2.

        One entry per retry: for the distinct delays of a long schedule use
        `rabbitflow.topology.schedule.distinct_delays`, which does not build this.
        """
        return tuple(self.delay_for(n) for n in range(1, self.max_retries + 1))


_HUGE_MS = 2**64
"""An exponential delay beyond any limit: computed as this instead of overflowing."""


def _exponential(delay: int, multiplier: float, power: int) -> int:
    if multiplier > 1 and math.log(delay) + power * math.log(multiplier) > math.log(_HUGE_MS):
        return _HUGE_MS
    return min(_HUGE_MS, round(delay * multiplier**power))


class DeadLetterTarget(_Model):
    """``dead_letter: {exchange, routing_key}``: dead letters go to a shared exchange."""

    exchange: str
    routing_key: str | None = None


def _dead_letter_shape(value: object) -> object:
    if value is None or isinstance(value, bool | dict | DeadLetterTarget):
        return value
    raise ValueError("expected true, false or a mapping {exchange: NAME, routing_key: KEY}")


MAX_PARTITIONS = 1024
"""Partition queues one queue may expand to."""


class PartitionHeader(_Model):
    """``key: {header: NAME}``: partition by the value of a message header."""

    header: str


def _partition_key_shape(value: object) -> object:
    # Checked before the union so a bad key gets one clear message, not one per member.
    if value == "routing_key" or isinstance(value, PartitionHeader):
        return value
    if isinstance(value, dict) and set(value) == {"header"}:
        name = value["header"]
        if isinstance(name, str) and name.strip():
            return value
        raise ValueError("the header name must be a non-empty string")
    raise ValueError("expected routing_key or a mapping {header: NAME}")


class Partitions(_Model):
    """``partitions: {count, key}``: per-key ordering across N single-active-consumer queues."""

    count: int = Field(ge=1, le=MAX_PARTITIONS)
    key: Annotated[
        Literal["routing_key"] | PartitionHeader, BeforeValidator(_partition_key_shape)
    ] = "routing_key"

    @property
    def header(self) -> str | None:
        """The header hashed to pick a partition; None when it is the routing key."""
        return self.key.header if isinstance(self.key, PartitionHeader) else None


class Queue(_Model):
    """A queue, keyed by its name under ``queues:``."""

    type: QueueType = QueueType.CLASSIC
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    max_length: AmqpInt | None = Field(default=None, ge=0)
    max_length_bytes: Annotated[Size, Field(ge=0)] | None = None
    overflow: Overflow | None = None
    message_ttl: Annotated[Duration, Field(ge=0)] | None = None
    expires: PositiveDuration | None = None
    single_active_consumer: bool = False
    delivery_limit: AmqpInt | None = Field(default=None, ge=0)
    max_priority: int | None = Field(default=None, ge=1, le=255)
    # A stream's retention is sent as text (`x-max-age: 400D`), not as a 32-bit TTL.
    max_age: Annotated[int, BeforeValidator(parse_duration), Field(gt=0)] | None = None
    arguments: Arguments = Field(default_factory=dict)
    bind: list[Binding] = Field(default_factory=list)
    retry: RetryPolicy | None = None
    dead_letter: Annotated[bool | DeadLetterTarget | None, BeforeValidator(_dead_letter_shape)] = (
        None
    )
    partitions: Partitions | None = None

    @property
    def dead_letters(self) -> bool | DeadLetterTarget:
        """The effective dead-letter setting: by default on exactly when retry is set."""
        if self.dead_letter is None:
            return self.retry is not None
        return self.dead_letter


class Topology(_Model):
    """Every declaration of one or more topology files, merged."""

    version: Literal[1] = 1
    exchanges: dict[str, Exchange] = Field(default_factory=dict)
    queues: dict[str, Queue] = Field(default_factory=dict)
    bindings: list[ExchangeBinding] = Field(default_factory=list)
    policies: dict[str, Policy] = Field(default_factory=dict)


def retry_queue_name(queue: str, delay_ms: int) -> str:
    """The delay queue for ``queue`` and a delay: ``Q.retry.<d>`` (``orders.retry.90s``)."""
    return f"{queue}.retry.{format_duration(delay_ms)}"


def dead_letter_exchange_name(queue: str) -> str:
    """The fanout exchange rabbitflow generates for ``dead_letter: true``: ``Q.dlx``."""
    return f"{queue}.dlx"


def dead_letter_queue_name(queue: str) -> str:
    """The queue bound to ``Q.dlx`` that holds the dead letters: ``Q.dlq``."""
    return f"{queue}.dlq"


def partition_exchange_name(queue: str) -> str:
    """The consistent-hash exchange feeding a partitioned queue's partitions: ``Q.partitions``."""
    return f"{queue}.partitions"


def partition_queue_names(queue: str, count: int) -> list[str]:
    """The partition queues of a partitioned queue: ``Q.p0`` … ``Q.p{count-1}``."""
    return [f"{queue}.p{i}" for i in range(count)]
