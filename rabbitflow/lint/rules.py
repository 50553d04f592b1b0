"""The file rules of ``rabbitflow lint``: pure checks of a valid topology (DESIGN.md §10).

Each rule has an id (RFnnn, stable: users silence and search by it), a severity and a
check that yields `Hit`s pointing at the key a user would change. docs/lint.md explains
every rule, the production failure it prevents and a reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rabbitflow.lint.findings import Finding, Hit, Locator, Severity
from rabbitflow.lint.routing import (
    dead_letter_edges,
    dead_letter_exchange,
    exchange_types,
    incoming_keys,
    route,
)
from rabbitflow.topology.expand import Declarations, QueueDecl, Role, expand
from rabbitflow.topology.schema import ExchangeType, Overflow, Queue, QueueType, Topology
from rabbitflow.topology.source import Path
from rabbitflow.units import format_duration

"""AMQP short strings: names and binding keys the broker refuses beyond this."""


@dataclass(frozen=True)
class Context:
    """What every rule reads: the merged topology and what it expands to."""

    topology: Topology
    decls: Declarations


Check = Callable[[Context], Iterator[Hit]]


@dataclass(frozen=True)
class Rule:
    """One lint rule."""

    id: str
    name: str
    severity: Severity
    summary: str
    check: Check


RULES: list[Rule] = []


def rule(id: str, name: str, severity: Severity, summary: str) -> Callable[[Check], Check]:
    """Register a check as a rule (in id order: the order findings are printed in)."""

    def register(check: Check) -> Check:
        RULES.append(Rule(id, name, severity, summary, check))
        return check

    return register


def lint_topology(topology: Topology, locator: Locator) -> list[Finding]:
    """Every finding of every file rule, sorted by file, line and rule."""
    context = Context(topology, expand(topology))
    findings = [locator.finding(r.id, r.severity, hit) for r in RULES for hit in r.check(context)]
    order = {s.file: i for i, s in enumerate(locator.sources)}
    return sorted(findings, key=lambda f: (order.get(f.file, 0), f.line, f.column, f.rule))


def _owner_path(topology: Topology, q: QueueDecl) -> Path:
    """Where a generated queue comes from: its work queue's ``retry``/``dead_letter`` key."""
    owner = q.owner or q.name
    declared = topology.queues.get(owner)
    if declared is None:
        return ("queues", owner)
    option = {Role.RETRY: "retry", Role.DEAD_LETTER: "dead_letter", Role.PARTITION: "partitions"}
    key = option.get(q.role)
    if key == "dead_letter" and "dead_letter" not in declared.model_fields_set:
        key = "retry"
    return ("queues", owner, key) if key else ("queues", owner)


def _declared_path(topology: Topology, q: QueueDecl) -> Path:
    return ("queues", q.name) if q.name in topology.queues else _owner_path(topology, q)


_QUEUE_KINDS = {"queues", "all"}


def effective_policy(topology: Topology, queue: str, queue_type: str) -> dict[str, Any]:
    """The definition of the ``policies:`` entry that applies to ``queue``, if any.

    RabbitMQ applies one policy per object: the matching one of highest priority. Read
    through ``getattr`` so that lint works on topologies with or without ``policies:``.
    """
    best: tuple[int, dict[str, Any]] | None = None
    for policy in (getattr(topology, "policies", None) or {}).values():
        apply_to = str(getattr(policy.apply_to, "value", policy.apply_to))
        if apply_to not in _QUEUE_KINDS and apply_to != f"{queue_type}_queues":
            continue
        try:
            if re.search(str(policy.pattern), queue) is None:
                continue
        except re.error:
            continue
        if best is None or policy.priority > best[0]:
            best = (int(policy.priority), dict(policy.definition))
    return best[1] if best else {}


def _has_dead_letters(queue: Queue) -> bool:
    return queue.dead_letters is not False or "x-dead-letter-exchange" in queue.arguments


@rule(
    "RF001",
    "transient-queue",
    Severity.WARNING,
    "a transient (durable: false) queue that is not exclusive",
)
def _transient_queue(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        if not queue.durable and not queue.exclusive:
            yield Hit(
                ("queues", name, "durable"),
                f"queue {name!r} is transient and not exclusive: it loses its messages on "
                "a broker restart, and RabbitMQ 4.3 refuses to declare it by default",
                "make it durable, or exclusive if it belongs to one worker",
            )


@rule(
    "RF002",
    "dead-letter-cycle",
    Severity.ERROR,
    "a dead-letter cycle that only expiry travels (no rejection on it)",
)
def _dead_letter_cycle(ctx: Context) -> Iterator[Hit]:
    edges = dead_letter_edges(ctx.decls)
    queues = {q.name: q for q in ctx.decls.queues}
    for component in _cycles(edges):
        if not all("x-message-ttl" in queues[n].arguments for n in component):
            continue  # a consumer's rejection is part of the loop: RabbitMQ lets it run
        first = next(q for q in ctx.decls.queues if q.name in component)
        loop = " -> ".join([*sorted(component), sorted(component)[0]])
        yield Hit(
            (*_declared_path(ctx.topology, first), "message_ttl")
            if first.name in ctx.topology.queues
            else _declared_path(ctx.topology, first),
            f"dead-letter cycle {loop}: every queue on it expires messages, so an expired "
            "message goes round without a rejection and RabbitMQ drops it when it comes "
            "back (silent loss)",
            "dead-letter one of these queues to a queue outside the cycle",
        )


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    nodes = list(dict.fromkeys([*edges, *(t for ts in edges.values() for t in ts)]))
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, set()):
                    found.append(component)
    return found


@rule("RF003", "unbound-queue", Severity.WARNING, "a queue nothing binds to")
def _unbound_queue(ctx: Context) -> Iterator[Hit]:
    reached = {t for targets in dead_letter_edges(ctx.decls).values() for t in targets}
    for name, queue in ctx.topology.queues.items():
        if queue.bind or name in reached:
            continue
        yield Hit(
            ("queues", name),
            f"queue {name!r} is bound to no exchange and receives no dead letters: only a "
            "publish to the default exchange with routing key "
            f"{name!r} reaches it",
            "add a bind: entry, or ignore RF003 if producers publish to it by name",
        )


@rule(
    "RF004",
    "unbound-exchange",
    Severity.WARNING,
    "an exchange nothing is bound to that is no alternate or dead-letter exchange",
)
def _unbound_exchange(ctx: Context) -> Iterator[Hit]:
    sources = {b.source for b in ctx.decls.bindings}
    used = {
        str(e.arguments["alternate-exchange"])
        for e in ctx.decls.exchanges
        if "alternate-exchange" in e.arguments
    }
    used |= {
        dlx for q in ctx.decls.queues if (dlx := dead_letter_exchange(q.arguments)) is not None
    }
    for name, exchange in ctx.topology.exchanges.items():
        if name in sources or name in used or exchange.alternate_exchange is not None:
            continue
        yield Hit(
            ("exchanges", name),
            f"exchange {name!r} has nothing bound to it: every message published to it is "
            "dropped (the publisher's confirm says nothing)",
            "bind a queue to it, give it an alternate_exchange, or remove it",
        )


@rule(
    "RF005",
    "retry-outlives-expires",
    Severity.WARNING,
    "a retry delay as long as the queue's expires",
)
def _retry_outlives_expires(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        if queue.expires is None or queue.retry is None or not queue.retry.schedule:
            continue
        longest = max(queue.retry.schedule)
        if longest >= queue.expires:
            yield Hit(
                ("queues", name, "expires"),
                f"queue {name!r} expires after {format_duration(queue.expires)} unused, but "
                f"a retry waits {format_duration(longest)}: a message coming back from "
                "its delay queue finds the queue deleted and is dropped",
                f"raise expires above {format_duration(longest)} or shorten the retry delays",
            )


@rule(
    "RF006",
    "ttl-shorter-than-retry",
    Severity.WARNING,
    "a message_ttl shorter than the longest retry delay",
)
def _ttl_shorter_than_retry(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        if queue.message_ttl is None or queue.retry is None or not queue.retry.schedule:
            continue
        longest = max(queue.retry.schedule)
        if queue.message_ttl < longest:
            yield Hit(
                ("queues", name, "message_ttl"),
                f"queue {name!r} expires messages after {format_duration(queue.message_ttl)} "
                f"but retries after up to {format_duration(longest)}: messages outlive "
                "their time to live while they wait for a retry",
                "make message_ttl longer than the longest retry delay, or shorten the delays",
            )


@rule(
    "RF007",
    "drop-head-without-dead-letters",
    Severity.WARNING,
    "overflow drop-head (RabbitMQ's default) on a queue without dead letters",
)
def _drop_head(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        if queue.type is QueueType.STREAM or _has_dead_letters(queue):
            continue
        policy = effective_policy(ctx.topology, name, queue.type.value)
        if "dead-letter-exchange" in policy or policy.get("overflow", "drop-head") != "drop-head":
            continue
        limited = queue.max_length is not None or queue.max_length_bytes is not None
        if not limited or queue.overflow not in (None, Overflow.DROP_HEAD):
            continue
        key = (
            "overflow"
            if queue.overflow is not None
            else ("max_length" if queue.max_length is not None else "max_length_bytes")
        )
        implicit = "" if queue.overflow is not None else " (RabbitMQ's default overflow)"
        yield Hit(
            ("queues", name, key),
            f"queue {name!r} drops its oldest message when full{implicit} and has no "
            "dead letters: messages are lost silently, and no publisher is told",
            "use overflow: reject-publish so publishers see a nack, or dead_letter: true",
        )


@rule(
    "RF008",
    "quorum-without-delivery-limit",
    Severity.WARNING,
    "a quorum queue (generated dead-letter queues included) with no delivery_limit and "
    "no dead-letter exchange",
)
def _quorum_without_limit(ctx: Context) -> Iterator[Hit]:
    for q in ctx.decls.queues:
        args = q.arguments
        if args.get("x-queue-type") != "quorum":
            continue
        if "x-delivery-limit" in args or dead_letter_exchange(args) is not None:
            continue
        policy = effective_policy(ctx.topology, q.name, "quorum")
        if "delivery-limit" in policy or "dead-letter-exchange" in policy:
            continue
        generated = q.name not in ctx.topology.queues
        what = f"generated dead-letter queue {q.name!r}" if generated else f"queue {q.name!r}"
        yield Hit(
            ("queues", q.name, "type") if not generated else _owner_path(ctx.topology, q),
            f"{what} is a quorum queue with no delivery_limit and no dead-letter exchange: "
            "RabbitMQ 4 applies a limit of 20 and then drops the message (requeued 20 "
            "times, e.g. listed 20 times by dlq list)",
            "set delivery_limit with a dead-letter exchange"
            if not generated
            else f"a policy giving {q.name!r} a delivery-limit and a dead-letter-exchange, "
            "or dead_letter: {exchange: ...} to a queue you declare",
        )


@rule(
    "RF009",
    "redundant-topic-binding",
    Severity.INFO,
    "a topic binding made redundant by a broader one of the same queue",
)
def _redundant_topic_binding(ctx: Context) -> Iterator[Hit]:
    types = exchange_types(ctx.decls)
    for name, queue in ctx.topology.queues.items():
        keys: list[tuple[str, int, str]] = [
            (b.exchange, i, key)
            for i, b in enumerate(queue.bind)
            if types.get(b.exchange) == ExchangeType.TOPIC.value
            for key in b.keys
        ]
        for exchange, i, narrow in keys:
            broader = next(
                (
                    key
                    for other_exchange, j, key in keys
                    if other_exchange == exchange
                    and (key, j) != (narrow, i)
                    and key != narrow
                    and topic_covers(key, narrow)
                ),
                None,
            )
            if broader is None:
                continue
            spec = queue.bind[i]
            where: Path = ("queues", name, "bind", i, "routing_key")
            if spec.routing_keys is not None:
                where = ("queues", name, "bind", i, "routing_keys", spec.routing_keys.index(narrow))
            yield Hit(
                where,
                f"binding key {narrow!r} of queue {name!r} on {exchange!r} is redundant: "
                f"{broader!r} already matches every key it matches",
                f"remove {narrow!r}, or narrow {broader!r}",
            )


def topic_covers(broad: str, narrow: str) -> bool:
    """Whether topic pattern ``broad`` matches every routing key ``narrow`` matches."""
    return _covers(tuple(broad.split(".")), tuple(narrow.split(".")))


def _covers(p: tuple[str, ...], q: tuple[str, ...]) -> bool:
    if not p:
        return not q
    head = p[0]
    if head == "#":
        return _covers(p[1:], q) or (bool(q) and _covers(p, q[1:]))
    if not q or q[0] == "#":
        return False
    if head == "*":
        return _covers(p[1:], q[1:])
    return q[0] == head and _covers(p[1:], q[1:])


@rule(
    "RF011",
    "headers-binding-without-headers",
    Severity.WARNING,
    "a headers binding with no header to match",
)
def _headers_without_headers(ctx: Context) -> Iterator[Hit]:
    types = exchange_types(ctx.decls)
    message = (
        "binding to headers exchange {ex!r} names no header: with x-match all it takes "
        "every message, with any none, whatever the publisher sets"
    )
    hint = "add headers: {name: value}, or use a fanout exchange if every message is wanted"
    for name, queue in ctx.topology.queues.items():
        for i, b in enumerate(queue.bind):
            if types.get(b.exchange) == ExchangeType.HEADERS.value and not b.headers:
                yield Hit(("queues", name, "bind", i), message.format(ex=b.exchange), hint)
    for j, eb in enumerate(ctx.topology.bindings):
        if types.get(eb.source) == ExchangeType.HEADERS.value and not eb.headers:
            yield Hit(("bindings", j), message.format(ex=eb.source), hint)


@rule(
    "RF012",
    "dead-letters-unroutable",
    Severity.ERROR,
    "dead letters sent to an exchange that routes them to no queue",
)
def _dead_letters_unroutable(ctx: Context) -> Iterator[Hit]:
    declared = {e.name for e in ctx.decls.exchanges} | {""}
    for q in ctx.decls.queues:
        target = dead_letter_exchange(q.arguments)
        if target is None or (target not in declared and not target.startswith("amq.")):
            continue
        key = q.arguments.get("x-dead-letter-routing-key")
        keys = {str(key)} if key is not None else incoming_keys(ctx.decls, q.name)
        if route(ctx.decls, target, keys):
            continue
        path = _declared_path(ctx.topology, q)
        if q.name in ctx.topology.queues:
            path = (*path, "dead_letter")
        shown = repr(str(key)) if key is not None else "their original routing keys"
        yield Hit(
            path,
            f"dead letters of {q.name!r} go to exchange {target!r} with {shown}, which "
            "routes them to no queue: the broker drops them",
            f"bind a queue to {target!r} for these keys",
        )


@rule(
    "RF013",
    "durable-queue-on-transient-exchange",
    Severity.WARNING,
    "a durable queue bound to a transient exchange",
)
def _transient_exchange(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        for i, b in enumerate(queue.bind):
            exchange = ctx.topology.exchanges.get(b.exchange)
            if queue.durable and exchange is not None and not exchange.durable:
                yield Hit(
                    ("queues", name, "bind", i, "exchange"),
                    f"durable queue {name!r} is bound to transient exchange {b.exchange!r}: "
                    "after a broker restart the exchange and the binding are gone, and "
                    "publishers' messages no longer reach the queue",
                    f"make {b.exchange!r} durable",
                )


@rule("RF014", "unbounded-stream", Severity.WARNING, "a stream with no retention limit")
def _unbounded_stream(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        args = queue.arguments
        if queue.type is not QueueType.STREAM:
            continue
        if queue.max_age or queue.max_length_bytes or "x-max-age" in args:
            continue
        if "x-max-length-bytes" in args:
            continue
        yield Hit(
            ("queues", name, "type"),
            f"stream {name!r} has neither max_age nor max_length_bytes: it grows until "
            "the disk alarm blocks every publisher of the broker",
            "set max_age (e.g. 7d) or max_length_bytes",
        )


@rule(
    "RF015",
    "retries-then-dropped",
    Severity.INFO,
    "retries with dead_letter: false: the last failure drops the message",
)
def _retries_then_dropped(ctx: Context) -> Iterator[Hit]:
    for name, queue in ctx.topology.queues.items():
        if queue.retry is None or queue.dead_letter is not False:
            continue
        if "x-dead-letter-exchange" in queue.arguments:
            continue
        yield Hit(
            ("queues", name, "dead_letter"),
            f"queue {name!r} retries failures but keeps no dead letters: after the last "
            "retry the message is dropped, with nothing left to inspect or replay",
            "dead_letter: true keeps them in a dead-letter queue",
        )


@rule(
    "RF016",
    "internal-exchange-fed-by-nothing",
    Severity.WARNING,
    "an internal exchange no exchange-to-exchange binding feeds",
)
def _internal_exchange_unfed(ctx: Context) -> Iterator[Hit]:
    fed = {b.destination for b in ctx.decls.bindings if b.destination_type == "exchange"}
    fed |= {
        str(e.arguments["alternate-exchange"])
        for e in ctx.decls.exchanges
        if "alternate-exchange" in e.arguments
    }
    fed |= {dlx for q in ctx.decls.queues if (dlx := dead_letter_exchange(q.arguments)) is not None}
    for name, exchange in ctx.topology.exchanges.items():
        if exchange.internal and name not in fed:
            yield Hit(
                ("exchanges", name, "internal"),
                f"exchange {name!r} is internal, so clients cannot publish to it, and no "
                "exchange-to-exchange binding, alternate or dead-letter route feeds it: "
                "its queues never receive a message",
                "add a bindings: entry with it as destination, or drop internal: true",
            )
