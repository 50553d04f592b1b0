"""Turn a broker's declarations back into a topology file (``rabbitflow import``).

rabbitflow's own objects are recognised and folded back: ``Q.retry.<d>`` delay queues into
``retry:``, ``Q.dlx``/``Q.dlq`` into ``dead_letter: true``, a dead-letter exchange of the
files into ``dead_letter: {exchange, routing_key}``. Every fold is checked by expanding the
result again: when the expansion would not give back exactly the broker's objects, the
objects stay as they are (plain queues, raw ``arguments``), so the file always declares
what the broker holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from pydantic import ValidationError

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
from rabbitflow.topology.schema import (
    Binding,
    Queue,
    Topology,
    dead_letter_exchange_name,
)
from rabbitflow.units import format_duration

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
    """Guesses made (the broker does not store `max_retries`), one line each."""

    def to_yaml(self) -> str:
        """The topology file's text, notes first as comments."""
        head = "".join(f"# {note}\n" for note in self.notes)
        return head + yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True)


def adopt(
    declarations: Declarations, retry_hints: Mapping[str, Mapping[str, Any]] | None = None
) -> Adopted:
    """A topology that declares exactly ``declarations``.

    Args:
        declarations: a vhost's objects (`declarations_from_definitions`).
        retry_hints: retry policies by queue, as rabbitflow's export keeps them; a hint is
            used only when it expands to the delay queues the broker holds.
    """
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
    for binding in declarations.bindings:
        if (
            binding.destination_type == "queue"
            and binding.destination in ordered
            and binding not in state.used_bindings
        ):
            _add_binding(ordered[binding.destination], binding, state.exchanges)
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
    return Adopted(doc, state.notes)


def _policy(p: PolicyDecl) -> dict[str, Any]:
    # The broker's spelling of apply-to is the file's; priority 0 is the default.
    out: dict[str, Any] = {"pattern": p.pattern, "apply_to": p.apply_to}
    if p.priority:
        out["priority"] = p.priority
    out["definition"] = dict(p.definition)
    return out


class _State:
    def __init__(self, decls: Declarations, hints: dict[str, Mapping[str, Any]]) -> None:
        self.queues = {q.name: q for q in decls.queues}
        self.exchanges = {e.name: e for e in decls.exchanges}
        self.bindings = list(decls.bindings)
        self.hints = hints
        self.used_queues: set[str] = set()
        self.used_exchanges: set[str] = set()
        self.used_bindings: list[BindingDecl] = []
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
            for q in self.queues.values()
            if q.name.startswith(f"{name}.retry.") and q.name not in self.used_queues
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
        ours = [_bare(b) for b in generated.bindings if b.destination != name]
        if not all(b in self.bindings for b in ours):
            return False
        # A binding of its own on Q.dlx or Q.dlq means someone else uses them: keep them.
        queues = {q.name for q in generated.queues if q.name != name}
        exchanges = {e.name for e in generated.exchanges}
        return not any(
            b not in ours and (b.source in exchanges or b.destination in (queues | exchanges))
            for b in self.bindings
        )

    def _use(self, name: str, fields: dict[str, Any]) -> None:
        generated = expand(Topology(queues={name: Queue.model_validate(fields)}))
        self.used_queues.update(q.name for q in generated.queues)
        self.used_exchanges.update(e.name for e in generated.exchanges)
        self.used_bindings += [_bare(b) for b in generated.bindings if b.destination != name]


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
    if queue_arguments(model, decl.name) != dict(decl.arguments):
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
    queue: dict[str, Any], b: BindingDecl, exchanges: Mapping[str, ExchangeDecl]
) -> None:
    entry = _binding_fields(b, exchanges)
    binds: list[dict[str, Any]] = queue.setdefault("bind", [])
    if "headers" not in entry and "arguments" not in entry:
        # Keys to the same exchange are written once, as routing_keys.
        for other in binds:
            if (
                other.get("exchange") == b.source
                and "headers" not in other
                and "arguments" not in other
            ):
                keys = other.pop("routing_keys", None) or [other.pop("routing_key", "")]
                other["routing_keys"] = [*keys, b.routing_key]
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
