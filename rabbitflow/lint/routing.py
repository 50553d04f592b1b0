"""Where the broker would route a message, from declarations alone (no network).

Lint follows dead letters through exchanges to find cycles and dead letters nothing
receives; these helpers answer "which queues does exchange E deliver key K to".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rabbitflow.topology.dead_letters import topic_matches
from rabbitflow.topology.expand import BindingDecl, Declarations, QueueDecl
from rabbitflow.topology.validate import BUILTIN_EXCHANGES

_ANY_KEY = ("fanout", "headers", "x-consistent-hash")


def exchange_types(decls: Declarations) -> dict[str, str]:
    """Type of every exchange a message can reach: the declared and the built-in ones."""
    types = {name: kind.value for name, kind in BUILTIN_EXCHANGES.items()}
    types.update({e.name: e.type for e in decls.exchanges})
    return types


def binding_matches(kind: str | None, binding_key: str, routing_key: str | None) -> bool:
    """Whether a binding of an exchange of type ``kind`` takes ``routing_key``.

    ``routing_key`` None stands for "any key": every binding may match. Headers
    exchanges match on headers lint cannot know, so every binding may match.
    """
    if routing_key is None or kind in _ANY_KEY:
        return True
    if kind == "topic":
        return topic_matches(binding_key, routing_key)
    return binding_key == routing_key


def route(decls: Declarations, exchange: str, keys: Iterable[str | None]) -> set[str]:
    """The queues ``exchange`` delivers messages with any of ``keys`` to.

    Follows exchange-to-exchange bindings and alternate exchanges (a message no binding
    takes goes to the alternate exchange, when there is one).
    """
    types = exchange_types(decls)
    queues = {q.name for q in decls.queues}
    alternates = {
        e.name: str(e.arguments["alternate-exchange"])
        for e in decls.exchanges
        if "alternate-exchange" in e.arguments
    }
    by_source: dict[str, list[BindingDecl]] = {}
    for b in decls.bindings:
        by_source.setdefault(b.source, []).append(b)
    reached: set[str] = set()
    for key in keys:
        todo, seen = [exchange], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if current == "":
                if key is None:
                    continue
                if key in queues:
                    reached.add(key)
                continue
            matched = [
                b
                for b in by_source.get(current, [])
                if binding_matches(types.get(current), b.routing_key, key)
            ]
            for b in matched:
                if b.destination_type == "queue":
                    reached.add(b.destination)
                else:
                    todo.append(b.destination)
            if (not matched or key is None) and current in alternates:
                todo.append(alternates[current])
    return reached


def incoming_keys(decls: Declarations, queue: str) -> set[str | None]:
    """Routing keys a message in ``queue`` may carry (from the bindings into it).

    A queue bound through a fanout or headers exchange takes any key: the set holds None.
    """
    types = exchange_types(decls)
    keys: set[str | None] = {queue}  # published to it by name through the default exchange
    for b in decls.bindings:
        if b.destination_type == "queue" and b.destination == queue:
            keys.add(None if types.get(b.source) in _ANY_KEY else b.routing_key)
    return keys


def dead_letter_edges(decls: Declarations) -> dict[str, set[str]]:
    """Queue → the queues its broker dead letters (rejected, expired, dropped) reach."""
    edges: dict[str, set[str]] = {}
    for q in decls.queues:
        target = dead_letter_exchange(q.arguments)
        if target is None:
            continue
        key = q.arguments.get("x-dead-letter-routing-key")
        keys = {str(key)} if key is not None else incoming_keys(decls, q.name)
        edges[q.name] = route(decls, target, keys)
    return edges


def dead_letter_exchange(arguments: Mapping[str, object]) -> str | None:
    """The ``x-dead-letter-exchange`` of a queue's arguments, None when unset."""
    value = arguments.get("x-dead-letter-exchange")
    return None if value is None else str(value)


def queue_by_name(decls: Declarations) -> dict[str, QueueDecl]:
    """The declarations' queues by name."""
    return {q.name: q for q in decls.queues}
