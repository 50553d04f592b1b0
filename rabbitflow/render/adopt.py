"""Turn a broker's declarations back into a topology file (``rabbitflow import``).

rabbitflow's own objects are recognised and folded back: ``Q.retry.<d>`` delay queues into
``retry:``, ``Q.dlx``/``Q.dlq`` into ``dead_letter: true``, a dead-letter exchange of the
files into ``dead_letter: {exchange, routing_key}``. Every fold is checked by expanding the
result again: when the expansion would not give back exactly the broker's objects, the
objects stay as they are (plain queues, raw ``arguments``), so the file always declares
what the broker holds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from pydantic import ValidationError

from rabbitflow.errors import TopologyError
from rabbitflow.topology.expand import (
    BindingDecl,
    Declarations,
    ExchangeDecl,
    PolicyDecl,
    QueueDecl,
    Role,
    expand,
    queue_arguments,
)
from rabbitflow.topology.loader import load_sources
from rabbitflow.topology.schema import (
    Binding,
    ExchangeType,
    Queue,
    Topology,
    dead_letter_exchange_name,
)
from rabbitflow.topology.source import Source
from rabbitflow.topology.validate import queue_problems
from rabbitflow.units import format_duration

# libyaml's emitter when PyYAML has it: ten times faster on 100,000 bindings.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_FIELDS = {
    "x-max-length": "max_length",
    "x-max-length-bytes": "max_length_bytes",
    "x-overflow": "overflow",
    "x-message-ttl": "message_ttl",
    "x-expires": "expires",
    "x-delivery-limit": "delivery_limit",
    "x-max-priority": "max_priority",
    "x-max-age": "max_age",
}
_DURATIONS = {"message_ttl", "expires"}
_AGE_UNITS = {
    "Y": 365 * 86_400_000,
    "M": 30 * 86_400_000,
    "D": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1000,
}


@dataclass
class Adopted:
    """The topology read from a broker's definitions, and what the reader should check."""

    document: dict[str, Any]
    """The topology as plain YAML-able data (``version``, ``exchanges``, ``queues``…)."""
    notes: list[str] = field(default_factory=list)
    """Guesses made (the broker does not store `max_retries`) and queues `declare` skips,
    one line each."""
    warnings: list[str] = field(default_factory=list)
    """Objects of the definitions the topology does not hold, one line per kind."""

    def to_yaml(self) -> str:
        """The topology file's text, warnings and notes first as comments."""
        head = "".join(f"# {line}\n" for line in (*self.warnings, *self.notes))
        return head + yaml.dump(self.document, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)


def adopt(
    declarations: Declarations, retry_hints: Mapping[str, Mapping[str, Any]] | None = None
) -> Adopted:
    """A topology that declares exactly ``declarations``, less what it cannot hold.

    Exchanges of a plugin's type (``x-delayed-message``…) are left out with their bindings,
    and so are bindings to a queue the definitions do not hold (a server-named or
    exclusive queue): each is named in `Adopted.warnings`.

    Args:
        declarations: a vhost's objects (`declarations_from_definitions`).
        retry_hints: retry policies by queue, as rabbitflow's export keeps them; a hint is
            used only when it expands to the delay queues the broker holds.
    """
    declarations, warnings = _declarable(declarations)
    state = _State(declarations, dict(retry_hints or {}))
    queues: dict[str, Any] = {}
    # Shorter names first: a work queue is folded before its Q.retry.* and Q.dlq.
    for name in sorted(state.queues, key=lambda n: (len(n), n)):
        if name not in state.used_queues:
            queues[name] = state.queue(name)
    exchanges = {
        e.name: _exchange(e, state.exchanges)
        for e in declarations.exchanges
        if e.name not in state.used_exchanges
    }
    doc: dict[str, Any] = {"version": 1}
    if exchanges:
        doc["exchanges"] = exchanges
    ordered = {q.name: queues[q.name] for q in declarations.queues if q.name in queues}
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for binding in declarations.bindings:
        if (
            binding.destination_type == "queue"
            and binding.destination in ordered
            and _key(binding) not in state.used_bindings
        ):
            _add_binding(ordered[binding.destination], binding, state.exchanges, merged)
    if ordered:
        doc["queues"] = ordered
    e2e = [
        _exchange_binding(b, state.exchanges)
        for b in declarations.bindings
        if b.destination_type == "exchange"
    ]
    if e2e:
        doc["bindings"] = e2e
    if declarations.policies:
        doc["policies"] = {p.name: _policy(p) for p in declarations.policies}
    notes = state.notes + [
        f"queues.{q.name}: {'exclusive' if q.exclusive else 'auto_delete'}, so `declare` "
        "skips it and `plan` does not compare it (a worker declares it when it connects)"
        for q in declarations.queues
        if q.worker_owned and q.name in ordered
    ]
    return Adopted(doc, notes, warnings)


def _declarable(decls: Declarations) -> tuple[Declarations, list[str]]:
    """The declarations less what a topology cannot declare, and a warning for each kind."""
    known = {t.value for t in ExchangeType}
    plugin = {e.name: e.type for e in decls.exchanges if e.type not in known}
    queues = {q.name for q in decls.queues}
    exchanges = {e.name for e in decls.exchanges if e.name not in plugin}
    warnings: list[str] = []
    if plugin:
        listed = ", ".join(f"{n!r} ({t})" for n, t in plugin.items())
        warnings.append(
            f"{_count(len(plugin), 'exchange')} of a plugin's type not imported "
            f"(a topology declares {', '.join(sorted(known))}): {listed}"
        )
    of_plugin, no_queue = [], []
    kept = []
    for b in decls.bindings:
        if b.source in plugin or (b.destination_type == "exchange" and b.destination in plugin):
            of_plugin.append(b)
        elif (b.destination_type == "queue" and b.destination not in queues) or (
            b.destination_type == "exchange"
            and b.destination not in exchanges
            and not b.destination.startswith("amq.")
        ):
            no_queue.append(b)
        else:
            kept.append(b)
    if of_plugin:
        warnings.append(
            f"{_count(len(of_plugin), 'binding')} of those exchanges not imported: "
            + ", ".join(_describe_binding(b) for b in of_plugin)
        )
    if no_queue:
        warnings.append(
            f"{_count(len(no_queue), 'binding')} not imported, destination not in the "
            "definitions (a server-named or exclusive queue?): "
            + ", ".join(_describe_binding(b) for b in no_queue)
        )
    kept_exchanges = tuple(e for e in decls.exchanges if e.name not in plugin)
    return Declarations(kept_exchanges, decls.queues, tuple(kept), decls.policies), warnings


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe_binding(b: BindingDecl) -> str:
    key = f" ({b.routing_key!r})" if b.routing_key else ""
    return f"{b.source!r} -> {b.destination_type} {b.destination!r}{key}"


def _key(b: BindingDecl) -> tuple[str, str, str, str, str]:
    """A binding as a hashable value (its arguments are a dict)."""
    args = json.dumps(dict(b.arguments), sort_keys=True, default=str)
    return (b.source, b.destination, b.destination_type, b.routing_key, args)


def _policy(p: PolicyDecl) -> dict[str, Any]:
    # The broker's spelling of apply-to is the file's; priority 0 is the default.
    out: dict[str, Any] = {"pattern": p.pattern, "apply_to": p.apply_to}
    if p.priority:
        out["priority"] = p.priority
    out["definition"] = dict(p.definition)
    return out


class _State:
    def __init__(self, decls: Declarations, hints: dict[str, Mapping[str, Any]]) -> None:
        # Every look-up below goes through an index built once: import is linear in the
        # number of objects (10,000 queues, 100,000 bindings).
        self.queues = {q.name: q for q in decls.queues}
        self.exchanges = {e.name: e for e in decls.exchanges}
        self.bindings = {_key(b) for b in decls.bindings}
        self.touching: dict[str, list[BindingDecl]] = defaultdict(list)
        """Bindings by the name of each end: the exchanges and queues they touch."""
        for b in decls.bindings:
            self.touching[b.source].append(b)
            self.touching[b.destination].append(b)
        self.referrers: dict[str, set[str]] = defaultdict(set)
        """Exchange name → the queues dead-lettering to it and exchanges using it as
        alternate: an exchange someone refers to stays declared."""
        for q in decls.queues:
            target = q.arguments.get("x-dead-letter-exchange")
            if isinstance(target, str):
                self.referrers[target].add(q.name)
        for e in decls.exchanges:
            alt = e.arguments.get("alternate-exchange")
            if isinstance(alt, str):
                self.referrers[alt].add(e.name)
        self.retry_queues: dict[str, list[QueueDecl]] = defaultdict(list)
        """``Q`` → the queues named ``Q.retry.*`` (for every ``.retry.`` in a name)."""
        for q in decls.queues:
            at = q.name.find(".retry.")
            while at >= 0:
                self.retry_queues[q.name[:at]].append(q)
                at = q.name.find(".retry.", at + 1)
        self.hints = hints
        self.used_queues: set[str] = set()
        self.used_exchanges: set[str] = set()
        self.used_bindings: set[tuple[str, str, str, str, str]] = set()
        self.notes: list[str] = []

    def queue(self, name: str) -> dict[str, Any]:
        decl = self.queues[name]
        fields = _queue_fields(decl, self.exchanges)
        if fields is None:
            return _raw_queue(decl)
        if fields.get("dead_letter") is True and not self._fits(name, fields):
            # Q names Q.dlx but the broker's Q.dlx/Q.dlq are not rabbitflow's: keep it raw.
            del fields["dead_letter"]
            args = fields.setdefault("arguments", {})
            args["x-dead-letter-exchange"] = dead_letter_exchange_name(name)
        policy = self._retry_policy(name, fields)
        if policy is not None:
            fields = {**fields, "retry": policy}
            if fields.get("dead_letter") is True:
                del fields["dead_letter"]  # the default when retry is set
            elif "dead_letter" not in fields:
                fields["dead_letter"] = False
        self._use(name, fields)
        return _yaml_queue(fields)

    def _retry_policy(self, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        delays = sorted(
            int(q.arguments.get("x-message-ttl", -1))
            for q in self.retry_queues.get(name, ())
            if q.name not in self.used_queues
        )
        if not delays or delays[0] <= 0:
            return None
        hint = self.hints.get(name)
        candidates = ([dict(hint)] if hint is not None else []) + [_infer_policy(delays)]
        for index, policy in enumerate(candidates):
            trial = {"dead_letter": False, **fields, "retry": policy}
            if self._fits(name, trial):
                if index == len(candidates) - 1:
                    self.notes.append(
                        f"queues.{name}.retry: max_retries {policy['max_retries']} is a guess "
                        "(the broker does not store it): check it"
                    )
                return policy
        return None

    def _fits(self, name: str, fields: dict[str, Any]) -> bool:
        """Whether the queue written this way expands to exactly the broker's objects."""
        try:
            model = Queue.model_validate(fields)
        except ValidationError:
            return False
        generated = expand(Topology(queues={name: model}))
        if any(
            self.queues.get(q.name) != _bare(q) or (q.name != name and q.name in self.used_queues)
            for q in generated.queues
        ):
            return False
        if any(self.exchanges.get(e.name) != _bare(e) for e in generated.exchanges):
            return False
        ours = {_key(b) for b in generated.bindings if b.destination != name}
        if not ours <= self.bindings:
            return False
        # A binding of its own on Q.dlx or Q.dlq means someone else uses them: keep them.
        queues = {q.name for q in generated.queues if q.name != name}
        exchanges = {e.name for e in generated.exchanges}
        if any(
            _key(b) not in ours and (b.source in exchanges or b.destination in queues | exchanges)
            for end in queues | exchanges
            for b in self.touching.get(end, ())
        ):
            return False
        # Another queue dead-lettering to Q.dlx (or an exchange using it as alternate):
        # Q.dlx is shared, not Q's alone, and stays declared.
        return not any(self.referrers.get(e, set()) - {name} for e in exchanges)

    def _use(self, name: str, fields: dict[str, Any]) -> None:
        generated = expand(Topology(queues={name: Queue.model_validate(fields)}))
        self.used_queues.update(q.name for q in generated.queues)
        self.used_exchanges.update(e.name for e in generated.exchanges)
        self.used_bindings |= {_key(b) for b in generated.bindings if b.destination != name}


def canonical(topology: Topology) -> Topology:
    """The topology with defaults written out, so that two ways of writing the same thing
    compare equal: ``dead_letter`` resolved, ``match: all`` on headers bindings, binding
    keys as ``routing_keys``. ``import`` gives back a topology equal to the exported one
    in this sense (and object for object in `expand`)."""
    queues = {}
    for name, queue in topology.queues.items():
        binds = [_canonical_binding(b) for b in queue.bind]
        queues[name] = queue.model_copy(update={"dead_letter": queue.dead_letters, "bind": binds})
    return topology.model_copy(update={"queues": queues})


def _canonical_binding(b: Binding) -> Binding:
    if b.headers is not None or b.match is not None:
        return b.model_copy(update={"match": b.match or "all"})
    return b.model_copy(update={"routing_key": None, "routing_keys": list(b.keys)})


def _queue_fields(decl: QueueDecl, exchanges: Mapping[str, ExchangeDecl]) -> dict[str, Any] | None:
    """The schema fields of a queue, or None when they would not give back its arguments."""
    args = dict(decl.arguments)
    fields: dict[str, Any] = {}
    queue_type = args.pop("x-queue-type", "classic")
    if queue_type != "classic":
        fields["type"] = queue_type
    if not decl.durable:
        fields["durable"] = False
    if decl.auto_delete:
        fields["auto_delete"] = True
    if decl.exclusive:
        fields["exclusive"] = True
    for key, name in _FIELDS.items():
        if key in args:
            value = args.pop(key)
            fields[name] = _age_ms(value) if name == "max_age" else value
    if args.get("x-single-active-consumer") is True:
        fields["single_active_consumer"] = args.pop("x-single-active-consumer")
    target = args.get("x-dead-letter-exchange")
    if target == dead_letter_exchange_name(decl.name):
        fields["dead_letter"] = True  # the caller checks that Q.dlx and Q.dlq are ours
        args.pop("x-dead-letter-exchange")
    elif isinstance(target, str) and target in exchanges:
        args.pop("x-dead-letter-exchange")
        fields["dead_letter"] = {"exchange": target}
        if "x-dead-letter-routing-key" in args:
            fields["dead_letter"]["routing_key"] = args.pop("x-dead-letter-routing-key")
    if args:
        fields["arguments"] = args
    try:
        model = Queue.model_validate(fields)
    except ValidationError:
        return None
    if queue_arguments(model, decl.name) != dict(decl.arguments) or queue_problems(model):
        return None
    return fields


def _raw_queue(decl: QueueDecl) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not decl.durable:
        out["durable"] = False
    if decl.auto_delete:
        out["auto_delete"] = True
    if decl.arguments:
        out["arguments"] = dict(decl.arguments)
    return out


def _infer_policy(delays: list[int]) -> dict[str, Any]:
    """The simplest policy whose schedule uses exactly these distinct delays."""
    n, first = len(delays), delays[0]
    if n == 1:
        return {"max_retries": 1, "backoff": "fixed", "delay": first}
    if all(d == first * (i + 1) for i, d in enumerate(delays)) and n > 2:
        return {"max_retries": n, "backoff": "linear", "delay": first}
    ratio = delays[1] / first
    if ratio > 1 and all(d == round(first * ratio**i) for i, d in enumerate(delays)):
        policy: dict[str, Any] = {"max_retries": n, "delay": first}
        if ratio != 2:
            policy["multiplier"] = int(ratio) if ratio.is_integer() else ratio
        return policy
    return {"max_retries": n, "delays": delays}


def _yaml_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(policy)
    for key in ("delay", "max_delay"):
        if out.get(key) is not None:
            out[key] = format_duration(int(out[key]))
    if out.get("delays") is not None:
        out["delays"] = [format_duration(int(d)) for d in out["delays"]]
    return out


def _yaml_queue(fields: dict[str, Any]) -> dict[str, Any]:
    # In the schema's order, as a person would write it.
    out = {key: fields[key] for key in Queue.model_fields if key in fields}
    if "retry" in out:
        out["retry"] = _yaml_policy(out["retry"])
    for key in _DURATIONS | {"max_age"}:
        if key in out:
            out[key] = format_duration(int(out[key]))
    return out


def _age_ms(value: Any) -> Any:
    """``7D`` → ms; anything else is returned as is (and fails validation)."""
    if isinstance(value, str) and value[:-1].isdigit() and value[-1] in _AGE_UNITS:
        return int(value[:-1]) * _AGE_UNITS[value[-1]]
    return value


def _exchange(decl: ExchangeDecl, exchanges: Mapping[str, ExchangeDecl]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": decl.type}
    if not decl.durable:
        out["durable"] = False
    if decl.auto_delete:
        out["auto_delete"] = True
    if decl.internal:
        out["internal"] = True
    args = dict(decl.arguments)
    if args.get("alternate-exchange") in exchanges:
        out["alternate_exchange"] = args.pop("alternate-exchange")
    if args:
        out["arguments"] = args
    return out


def _add_binding(
    queue: dict[str, Any],
    b: BindingDecl,
    exchanges: Mapping[str, ExchangeDecl],
    plain: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Add ``b`` to the queue's ``bind``; ``plain`` holds, by (queue, exchange), the entry
    that keys to the same exchange are added to."""
    entry = _binding_fields(b, exchanges)
    binds: list[dict[str, Any]] = queue.setdefault("bind", [])
    if "headers" not in entry and "arguments" not in entry and "match" not in entry:
        # Keys to the same exchange are written once, as routing_keys.
        other = plain.get((b.destination, b.source))
        if other is not None:
            keys = other.pop("routing_keys", None) or [other.pop("routing_key", "")]
            other["routing_keys"] = [*keys, b.routing_key]
            return
        plain[(b.destination, b.source)] = item = {"exchange": b.source, **entry}
        binds.append(item)
        return
    binds.append({"exchange": b.source, **entry})


def _binding_fields(b: BindingDecl, exchanges: Mapping[str, ExchangeDecl]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    args = dict(b.arguments)
    source = exchanges.get(b.source)
    if "x-match" in args and source is not None and source.type == "headers":
        out["match"] = args.pop("x-match")
        headers = {k: v for k, v in args.items() if not k.startswith("x-")}
        args = {k: v for k, v in args.items() if k.startswith("x-")}
        if headers:
            out["headers"] = headers
            if out["match"] == "all":
                del out["match"]  # the default once headers are given
    if b.routing_key:
        out["routing_key"] = b.routing_key
    if args:
        out["arguments"] = args
    return out


def _exchange_binding(b: BindingDecl, exchanges: Mapping[str, ExchangeDecl]) -> dict[str, Any]:
    return {"source": b.source, "destination": b.destination, **_binding_fields(b, exchanges)}


def _bare(obj: Any) -> Any:
    """The object without its role and owner, to compare with what the broker holds."""
    if isinstance(obj, QueueDecl | ExchangeDecl):
        return replace(obj, role=Role.DECLARED, owner=None)
    if isinstance(obj, BindingDecl):
        return replace(obj, role=Role.DECLARED)
    return obj


def check_imported(document: Mapping[str, Any], definitions: str) -> list[str]:
    """The problems of an imported topology, each pointing at the definitions' object.

    The document is checked as data, as `rabbitflow validate` would check the file written
    from it, and each problem is worded as one of the definitions file (``definitions``):
    the object's section and name, never a place in a file not yet written.
    """
    try:
        load_sources([Source(definitions, data=dict(document))])
    except TopologyError as exc:
        return [_located(p.path, p.message, document, definitions) for p in exc.problems]
    return []


def _located(path: str, message: str, document: Mapping[str, Any], definitions: str) -> str:
    message = message.replace("in any file", "in the definitions")
    exchanges = document.get("exchanges") or {}
    queues = document.get("queues") or {}
    if path.startswith("queues."):
        name = _longest_name(path.removeprefix("queues."), queues)
        if name is not None:
            rest = path.removeprefix(f"queues.{name}")
            if rest.startswith(".bind["):
                index = int(rest[len(".bind[") : rest.index("]")])
                source = queues[name]["bind"][index]["exchange"]
                return (
                    f"{definitions}: binding of exchange {source!r} to queue {name!r} "
                    f"(in 'bindings'): {message}"
                )
            return f"{definitions}: queue {name!r} (in 'queues'): {message}"
    if path.startswith("exchanges."):
        name = _longest_name(path.removeprefix("exchanges."), exchanges)
        if name is not None:
            return f"{definitions}: exchange {name!r} (in 'exchanges'): {message}"
    if path.startswith("bindings["):
        entry = document["bindings"][int(path[len("bindings[") : path.index("]")])]
        return (
            f"{definitions}: binding of exchange {entry['source']!r} to exchange "
            f"{entry['destination']!r} (in 'bindings'): {message}"
        )
    return f"{definitions}: {path + ': ' if path else ''}{message}"


def _longest_name(rest: str, names: Mapping[str, Any]) -> str | None:
    """The name a problem's path starts with (names may hold dots: the longest wins)."""
    found = [n for n in names if rest == n or rest.startswith((f"{n}.", f"{n}["))]
    return max(found, key=len) if found else None
