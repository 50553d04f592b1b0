"""``policies:`` in topology files (DESIGN.md §10): the schema and its meaning checks.

A policy is a server-side setting the broker applies to every queue (or exchange) whose name
matches ``pattern``. rabbitflow keeps them in the same files as the objects they apply to,
applies them through the management API and diffs them in ``plan``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from rabbitflow.errors import Problem
    from rabbitflow.topology.validate import Located


class ApplyTo(StrEnum):
    """Which objects a policy applies to (RabbitMQ's ``apply-to``)."""

    QUEUES = "queues"
    """Every queue type."""
    CLASSIC_QUEUES = "classic_queues"
    """Classic queues only (RabbitMQ 3.12 or newer)."""
    QUORUM_QUEUES = "quorum_queues"
    """Quorum queues only (RabbitMQ 3.12 or newer)."""
    STREAMS = "streams"
    """Streams only (RabbitMQ 3.12 or newer)."""
    EXCHANGES = "exchanges"
    """Exchanges only."""
    ALL = "all"
    """Queues and exchanges."""


NEEDS_3_12 = frozenset({ApplyTo.CLASSIC_QUEUES, ApplyTo.QUORUM_QUEUES, ApplyTo.STREAMS})
"""``apply-to`` values RabbitMQ 3.10 and 3.11 refuse ("should be 'queues', 'exchanges' or
'all'"); rabbitflow refuses them on such a broker rather than widen the policy to every
queue type."""


class Policy(BaseModel):
    """A policy, keyed by its name under ``policies:``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    apply_to: ApplyTo = ApplyTo.ALL
    priority: int = 0
    definition: dict[str, Any] = Field(min_length=1)


_INT = "a non-negative integer"
_STR = "a string"
# RabbitMQ's policy keys (rabbit_policies, the queue types, mirroring, federation), with
# what their value must be. Keys of plugins (federation) or of newer versions
# (stream-filter-size-bytes: 3.13, consumer-timeout and target-group-size: 3.12+) are known
# here; a broker that does not know one refuses it, and `declare` reports its answer.
DEFINITION_KEYS: dict[str, str] = {
    "alternate-exchange": _STR,
    "dead-letter-exchange": _STR,
    "dead-letter-routing-key": _STR,
    "dead-letter-strategy": "at-most-once or at-least-once",
    "message-ttl": _INT,
    "expires": "a positive integer",
    "max-length": _INT,
    "max-length-bytes": _INT,
    "max-in-memory-length": _INT,
    "max-in-memory-bytes": _INT,
    "delivery-limit": _INT,
    "overflow": "drop-head, reject-publish or reject-publish-dlx",
    "queue-mode": "default or lazy",
    "queue-version": "1 or 2",
    "queue-master-locator": "client-local, min-masters or random",
    "queue-leader-locator": "client-local or balanced",
    "initial-cluster-size": "a positive integer",
    "target-group-size": "a positive integer",
    "max-age": "a string such as 7D, 12h or 30m",
    "stream-max-segment-size-bytes": "a positive integer",
    "stream-filter-size-bytes": "an integer from 16 to 255",
    "consumer-timeout": "a positive integer",
    "ha-mode": "all, exactly or nodes",
    "ha-params": "a count or a list of nodes",
    "ha-sync-mode": "manual or automatic",
    "ha-sync-batch-size": "a positive integer",
    "ha-promote-on-shutdown": "always or when-synced",
    "ha-promote-on-failure": "always or when-synced",
    "federation-upstream": _STR,
    "federation-upstream-set": _STR,
}
_CHOICES = {
    "dead-letter-strategy": {"at-most-once", "at-least-once"},
    "overflow": {"drop-head", "reject-publish", "reject-publish-dlx"},
    "queue-mode": {"default", "lazy"},
    "queue-master-locator": {"client-local", "min-masters", "random"},
    "queue-leader-locator": {"client-local", "balanced"},
    "ha-mode": {"all", "exactly", "nodes"},
    "ha-sync-mode": {"manual", "automatic"},
    "ha-promote-on-shutdown": {"always", "when-synced"},
    "ha-promote-on-failure": {"always", "when-synced"},
}
_POSITIVE = {
    "expires",
    "initial-cluster-size",
    "target-group-size",
    "stream-max-segment-size-bytes",
    "consumer-timeout",
    "ha-sync-batch-size",
}
_EXCHANGE_KEYS = {"alternate-exchange", "federation-upstream", "federation-upstream-set"}
_MAX_AGE = re.compile(r"\d+[YMDhms]")


def check_policy(name: str, located: Located[Policy]) -> Iterator[Problem]:
    """The meaning problems of one policy: its pattern, its definition keys and values.

    The pattern is compiled with Python's `re`. RabbitMQ matches it with Erlang's `re`
    (PCRE): the common syntax (anchors, classes, groups, alternation, quantifiers, escapes)
    is the same; a PCRE-only construct Python refuses is reported here, and a pattern
    Python accepts but PCRE refuses is refused by the broker when declared.
    """
    from rabbitflow.topology.validate import did_you_mean

    policy = located.value
    if not name:
        yield located.problem("policy name must not be empty")
    elif len(name.encode()) > 255:
        yield located.problem("policy name is longer than 255 bytes")
    try:
        re.compile(policy.pattern)
    except re.error as exc:
        yield located.problem(
            f"pattern is not a regular expression: {exc}", "pattern", at_key=False
        )
    for key, value in policy.definition.items():
        if key not in DEFINITION_KEYS:
            yield located.problem(
                f"unknown policy key {key!r}" + did_you_mean(key, DEFINITION_KEYS),
                "definition",
                key,
            )
            continue
        message = _value_problem(key, value)
        if message is not None:
            yield located.problem(message, "definition", key, at_key=False)
        if policy.apply_to is ApplyTo.EXCHANGES and key not in _EXCHANGE_KEYS:
            yield located.problem(
                f"{key} applies to queues; this policy applies to exchanges", "definition", key
            )


def _value_problem(key: str, value: Any) -> str | None:
    expected = DEFINITION_KEYS[key]
    if key in _CHOICES:
        ok = value in _CHOICES[key]
    elif key == "queue-version":
        ok = value in (1, 2) and not isinstance(value, bool)
    elif key == "max-age":
        ok = isinstance(value, str) and bool(_MAX_AGE.fullmatch(value))
    elif key == "ha-params":
        ok = isinstance(value, list) or (isinstance(value, int) and not isinstance(value, bool))
    elif key == "stream-filter-size-bytes":
        ok = type(value) is int and 16 <= value <= 255
    elif expected == _STR:
        ok = isinstance(value, str)
    else:
        minimum = 1 if key in _POSITIVE else 0
        ok = type(value) is int and value >= minimum
    return None if ok else f"{key} must be {expected} (got {value!r})"


@dataclass(frozen=True)
class PolicyDecl:
    """A policy as the broker holds it (``apply_to`` in RabbitMQ's spelling)."""

    name: str
    pattern: str
    apply_to: str = "all"
    priority: int = 0
    definition: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The body of ``PUT /api/policies/{vhost}/{name}`` (and of a definitions entry)."""
        return {
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "priority": self.priority,
            "definition": dict(self.definition),
        }


def policy_declarations(policies: Mapping[str, Policy]) -> tuple[PolicyDecl, ...]:
    """The policies of a topology as the broker will hold them."""
    return tuple(
        PolicyDecl(name, p.pattern, p.apply_to.value, p.priority, dict(p.definition))
        for name, p in policies.items()
    )


def policies_from_definitions(items: Iterable[Mapping[str, Any]]) -> tuple[PolicyDecl, ...]:
    """The ``policies`` entries of a definitions document (or of ``GET /api/policies``)."""
    return tuple(
        PolicyDecl(
            str(p["name"]),
            str(p.get("pattern", "")),
            str(p.get("apply-to", "all")),
            int(p.get("priority", 0)),
            dict(p.get("definition") or {}),
        )
        for p in items
        if isinstance(p, Mapping) and "name" in p
    )
