"""``rabbitflow lint --broker``: checks of the files against the live vhost.

`read_broker` asks the management API once; `lint_broker` is pure, so unit tests feed it
a `BrokerState` built by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rabbitflow.amqp.management import HttpManagement
from rabbitflow.amqp.plan import Action, compare
from rabbitflow.lint.findings import Finding, Hit, Locator, Severity
from rabbitflow.render.definitions import declarations_from_definitions
from rabbitflow.topology.expand import Declarations, expand, physical_queues
from rabbitflow.topology.schema import Topology
from rabbitflow.topology.source import Path
from rabbitflow.units import format_duration

DEFAULT_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000
"""RabbitMQ's ``consumer_timeout`` since 3.8.15 when rabbitmq.conf does not set it. The
management API of 3.x does not show the node's value, so lint assumes this one unless
``--consumer-timeout`` says otherwise."""


@dataclass(frozen=True)
class BrokerState:
    """What lint needs of the live vhost."""

    definitions: Mapping[str, Any]
    queues: Sequence[Mapping[str, Any]] = ()
    deprecated_used: Sequence[Mapping[str, Any]] | None = None
    """``GET /api/deprecated-features/used`` (RabbitMQ 3.13+); None when not served."""
    version: str = ""


@dataclass(frozen=True)
class HandlerTimeout:
    """A handler's queue and its ``timeout`` in seconds."""

    queue: str
    timeout: float


@dataclass(frozen=True)
class BrokerRules:
    """Options of the broker checks."""

    handlers: Sequence[HandlerTimeout] = ()
    consumer_timeout_ms: int | None = None
    """The node's ``consumer_timeout``, when the user knows it; else the default."""


async def read_broker(api: HttpManagement, vhost: str) -> BrokerState:
    """The vhost's definitions and queues, and the deprecated features in use."""
    overview = await api.optional("/overview")
    used = await api.optional("/deprecated-features/used")
    return BrokerState(
        definitions=await api.definitions(vhost),
        queues=await api.queues(vhost),
        deprecated_used=used if isinstance(used, list) else None,
        version=str(overview.get("rabbitmq_version", "")) if isinstance(overview, dict) else "",
    )


def lint_broker(
    topology: Topology, state: BrokerState, locator: Locator, options: BrokerRules
) -> list[Finding]:
    """RF101-RF103: differing objects, consumer timeouts, deprecated features."""
    decls = expand(topology)
    findings = [
        locator.finding("RF101", Severity.ERROR, h) for h in _differing(topology, decls, state)
    ]
    findings += [
        locator.finding("RF102", Severity.ERROR, h)
        for h in _consumer_timeouts(topology, state, options)
    ]
    findings += [
        locator.finding("RF103", Severity.WARNING, h) for h in _deprecated(topology, state)
    ]
    return findings


def _path_of(topology: Topology, decls: Declarations, kind: str, name: str) -> Path:
    section = "exchanges" if kind == "exchange" else "queues"
    if name in getattr(topology, section):
        return (section, name)
    owners = [q.owner for q in decls.queues if q.name == name and q.owner]
    owners += [e.owner for e in decls.exchanges if e.name == name and e.owner]
    return ("queues", owners[0]) if owners else ()


def _differing(topology: Topology, decls: Declarations, state: BrokerState) -> Iterator[Hit]:
    live = declarations_from_definitions(state.definitions)
    for change in compare(decls, live).changes:
        if change.action is not Action.DIFFER:
            continue
        name = change.name.strip("'\"")
        diffs = "; ".join(
            f"{d.argument} {_shown(d.live)} on the broker, {_shown(d.declared)} in the files"
            for d in change.differences
        )
        yield Hit(
            _path_of(topology, decls, change.kind, name),
            f"{change.kind} {name!r} differs from the live one ({diffs}): RabbitMQ refuses "
            "to change it in place, so declare fails with PRECONDITION_FAILED",
            "rabbitflow plan shows it; recreate the object (rabbitflow migrate for a queue "
            "with messages)",
        )


def _consumer_timeouts(
    topology: Topology, state: BrokerState, options: BrokerRules
) -> Iterator[Hit]:
    live = {str(q.get("name")): q for q in state.queues}
    node_ms = options.consumer_timeout_ms
    for handler in options.handlers:
        for queue in physical_queues(topology, handler.queue):
            limit, source = _queue_consumer_timeout(live.get(queue), node_ms)
            if handler.timeout * 1000 < limit:
                continue
            yield Hit(
                ("queues", handler.queue),
                f"the handler of {queue!r} may run {format_duration(round(handler.timeout * 1e3))} "
                f"but the broker's consumer timeout there is {format_duration(limit)} "
                f"({source}): a slow run closes the channel and every unacked delivery "
                "is redelivered",
                "lower the handler's timeout, or raise consumer_timeout (x-consumer-timeout "
                "or a consumer-timeout policy)",
            )
            break


def _queue_consumer_timeout(
    queue: Mapping[str, Any] | None, node_ms: int | None
) -> tuple[int, str]:
    if queue is not None:
        arg = (queue.get("arguments") or {}).get("x-consumer-timeout")
        if isinstance(arg, int) and not isinstance(arg, bool):
            return arg, "queue argument x-consumer-timeout"
        policy = (queue.get("effective_policy_definition") or {}).get("consumer-timeout")
        if isinstance(policy, int) and not isinstance(policy, bool):
            return policy, f"policy {queue.get('policy')!r}"
    if node_ms is not None:
        return node_ms, "--consumer-timeout"
    return DEFAULT_CONSUMER_TIMEOUT_MS, "RabbitMQ's default; the API does not show the node's"


def _deprecated(topology: Topology, state: BrokerState) -> Iterator[Hit]:
    for q in state.definitions.get("queues") or []:
        name = str(q.get("name", ""))
        where: Path = ("queues", name) if name in topology.queues else ()
        if not q.get("durable", True) and not q.get("exclusive", False):
            yield Hit(
                where,
                f"live queue {name!r} is transient and not exclusive (deprecated feature "
                "transient_nonexcl_queues, refused by default from RabbitMQ 4.3)",
                "delete it and declare it durable",
            )
        if (q.get("arguments") or {}).get("x-queue-mode") is not None:
            yield Hit(
                where,
                f"live queue {name!r} sets x-queue-mode, ignored since RabbitMQ 3.12 "
                "(classic queues v2 always behave lazily)",
                "drop the argument",
            )
    for policy in state.definitions.get("policies") or []:
        definition = policy.get("definition") or {}
        if "ha-mode" in definition:
            yield Hit(
                (),
                f"policy {policy.get('name')!r} mirrors classic queues (ha-mode): classic "
                "mirroring is deprecated and removed in RabbitMQ 4.0",
                "use quorum queues (type: quorum) instead",
            )
    for feature in state.deprecated_used or []:
        yield Hit(
            (),
            f"the broker reports deprecated feature {feature.get('name')!r} in use: "
            f"{feature.get('desc') or feature.get('description') or ''}".rstrip(": "),
            str(feature.get("doc_url") or "see the RabbitMQ deprecated features page"),
        )


def _shown(value: object) -> str:
    return "not set" if value is None else repr(value)
