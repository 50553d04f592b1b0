"""``rabbitflow plan``: what the files declare against what the broker holds.

`compare` is pure (declarations on both sides); `live_declarations` reads the broker's side
through the management API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rabbitflow.amqp.management import ManagementApi
from rabbitflow.topology.definitions import declarations_from_definitions
from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl


class Action(StrEnum):
    """What `declare` (or a person) would have to do about one object."""

    CREATE = "create"
    """The files declare it; the broker does not have it."""
    DIFFER = "differ"
    """Both have it, with different properties or arguments (declare would fail)."""
    EXTRA = "extra"
    """The broker has it; no file declares it."""


@dataclass(frozen=True)
class Difference:
    """One property or argument that is not the same on both sides (None: not set)."""

    argument: str
    live: Any
    declared: Any


@dataclass(frozen=True)
class Change:
    """One object that is not in sync."""

    action: Action
    kind: str
    """``exchange``, ``queue`` or ``binding``."""
    name: str
    differences: tuple[Difference, ...] = ()

    def describe(self) -> str:
        """One line for people, e.g. ``differ queue 'q': x-max-length 10 -> 20``."""
        text = f"{self.action.value} {self.kind} {self.name}"
        if self.differences:
            text += ": " + "; ".join(
                f"{d.argument} {_show(d.live)} (broker) -> {_show(d.declared)} (files)"
                for d in self.differences
            )
        return text


@dataclass(frozen=True)
class Plan:
    """Every change, and the worker-owned queues left out of the comparison."""

    changes: tuple[Change, ...]
    skipped: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        """True when the broker holds exactly what the files declare."""
        return not self.changes


async def live_declarations(api: ManagementApi, vhost: str) -> Declarations:
    """The exchanges, queues and bindings the broker holds in ``vhost``."""
    return declarations_from_definitions(await api.definitions(vhost))


def compare(declared: Declarations, live: Declarations) -> Plan:
    """The changes between the files (``declared``) and the broker (``live``).

    Exclusive and auto-delete queues belong to running workers: they and their bindings
    are left out on both sides (listed in `Plan.skipped`).
    """
    skipped = {q.name for q in declared.queues if q.worker_owned}
    changes: list[Change] = []
    live_x = {e.name: e for e in live.exchanges}
    for e in declared.exchanges:
        changes += _compare_one("exchange", e.name, live_x.get(e.name), _exchange_props(e))
    live_q = {q.name: q for q in live.queues}
    for q in declared.queues:
        if q.name not in skipped:
            changes += _compare_one("queue", q.name, live_q.get(q.name), _queue_props(q))
    declared_x = {e.name for e in declared.exchanges}
    declared_q = {q.name for q in declared.queues}
    changes += [
        Change(Action.EXTRA, "exchange", repr(e.name))
        for e in live.exchanges
        if e.name not in declared_x
    ]
    changes += [
        Change(Action.EXTRA, "queue", repr(q.name))
        for q in live.queues
        if q.name not in declared_q and not q.exclusive
    ]

    def keep(b: BindingDecl) -> bool:
        return not (b.destination_type == "queue" and b.destination in skipped)

    wanted = [_binding_key(b) for b in declared.bindings if keep(b)]
    present = [_binding_key(b) for b in live.bindings if keep(b)]
    changes += [
        Change(Action.CREATE, "binding", _binding_name(k)) for k in wanted if k not in present
    ]
    changes += [
        Change(Action.EXTRA, "binding", _binding_name(k)) for k in present if k not in wanted
    ]
    return Plan(tuple(changes), tuple(sorted(skipped)))


def _compare_one(
    kind: str, name: str, live: ExchangeDecl | QueueDecl | None, declared: Mapping[str, Any]
) -> list[Change]:
    if live is None:
        return [Change(Action.CREATE, kind, repr(name))]
    have = _exchange_props(live) if isinstance(live, ExchangeDecl) else _queue_props(live)
    diffs = tuple(
        Difference(key, have.get(key), declared.get(key))
        for key in dict.fromkeys([*declared, *have])
        if not _same(have.get(key), declared.get(key))
    )
    return [Change(Action.DIFFER, kind, repr(name), diffs)] if diffs else []


def _exchange_props(e: ExchangeDecl) -> dict[str, Any]:
    return {
        "type": e.type,
        "durable": e.durable,
        "auto_delete": e.auto_delete,
        "internal": e.internal,
        **e.arguments,
    }


def _queue_props(q: QueueDecl) -> dict[str, Any]:
    args = dict(q.arguments)
    if args.get("x-queue-type") == "classic":
        # The broker's default: declared without it, shown with it by some tools.
        del args["x-queue-type"]
    return {"durable": q.durable, "auto_delete": q.auto_delete, **args}


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, not for the broker.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


BindingKey = tuple[str, str, str, str, Sequence[tuple[str, Any]]]


def _binding_key(b: BindingDecl) -> BindingKey:
    return (
        b.source,
        b.destination_type,
        b.destination,
        b.routing_key,
        tuple(sorted((k, repr(v)) for k, v in b.arguments.items())),
    )


def _binding_name(key: BindingKey) -> str:
    source, dest_type, dest, routing_key, args = key
    text = f"{source!r} -> {dest_type} {dest!r} (routing key {routing_key!r}"
    if args:
        text += ", arguments " + ", ".join(f"{k}={v}" for k, v in args)
    return text + ")"


def _show(value: Any) -> str:
    return "(not set)" if value is None else repr(value)
