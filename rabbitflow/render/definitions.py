"""RabbitMQ definitions (the JSON of ``rabbitmqctl export_definitions``) to and from
declarations.

`to_definitions` writes what ``rabbitmqctl import_definitions`` and the management API's
``POST /api/definitions/{vhost}`` accept; `declarations_from_definitions` reads a broker's
export (or the live ``GET /api/definitions/{vhost}``) back into the declarations `expand`
produces, so both sides can be compared or folded into a topology (`rabbitflow.render.adopt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rabbitflow.errors import ConfigError
from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl
from rabbitflow.topology.policies import policies_from_definitions
from rabbitflow.topology.schema import Topology

RABBIT_VERSION = "3.10.0"
"""The oldest RabbitMQ rabbitflow supports; written into exported definitions."""

METADATA_KEY = "rabbitflow"
"""Top-level key of exported definitions holding what the broker does not store (each
queue's `max_retries` and backoff); RabbitMQ ignores keys it does not know."""


def to_definitions(
    declarations: Declarations, vhost: str, topology: Topology | None = None
) -> dict[str, Any]:
    """The definitions of everything `declare` would create in ``vhost``.

    Exclusive and auto-delete queues belong to a running worker and are left out, with
    their bindings, as `declare` skips them.

    Args:
        declarations: the output of `expand`.
        vhost: written into every object (``import_definitions`` needs it; the management
            API's per-vhost import ignores it and uses the vhost of the request).
        topology: when given, each queue's retry policy is kept under `METADATA_KEY`, so
            that `import` gives back the same `max_retries`.
    """
    skipped = {q.name for q in declarations.queues if q.worker_owned}
    exchanges = [
        {
            "name": e.name,
            "vhost": vhost,
            "type": e.type,
            "durable": e.durable,
            "auto_delete": e.auto_delete,
            "internal": e.internal,
            "arguments": dict(e.arguments),
        }
        for e in declarations.exchanges
    ]
    queues = [
        {
            "name": q.name,
            "vhost": vhost,
            "durable": q.durable,
            "auto_delete": q.auto_delete,
            "arguments": dict(q.arguments),
        }
        for q in declarations.queues
        if q.name not in skipped
    ]
    bindings = [
        {
            "source": b.source,
            "vhost": vhost,
            "destination": b.destination,
            "destination_type": b.destination_type,
            "routing_key": b.routing_key,
            "arguments": dict(b.arguments),
        }
        for b in declarations.bindings
        if not (b.destination_type == "queue" and b.destination in skipped)
    ]
    out: dict[str, Any] = {
        "rabbit_version": RABBIT_VERSION,
        "vhosts": [{"name": vhost}],
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": [
            {"vhost": vhost, "name": p.name, **p.document()} for p in declarations.policies
        ],
    }
    if topology is not None:
        retry = {
            name: q.retry.model_dump(mode="json", exclude_defaults=True)
            for name, q in topology.queues.items()
            if q.retry is not None
        }
        out[METADATA_KEY] = {"version": 1, "retry": retry}
    return out


def worker_owned_queues(declarations: Declarations) -> list[str]:
    """The queues `to_definitions` leaves out (exclusive or auto-delete)."""
    return [q.name for q in declarations.queues if q.worker_owned]


def declarations_from_definitions(
    definitions: Mapping[str, Any], vhost: str | None = None
) -> Declarations:
    """The exchanges, queues and bindings of one vhost of a definitions document.

    The default exchange, the ``amq.*`` exchanges and server-named ``amq.*`` queues are left
    out: no topology declares them. Bindings *from* ``amq.*`` exchanges are kept.

    Args:
        definitions: a whole-broker export (objects carry ``vhost``) or a per-vhost one.
        vhost: which vhost to read; needed only when the document holds several.

    Raises:
        ConfigError: when the document is not definitions, or holds several vhosts and
            ``vhost`` is not given (or names none of them).
    """
    if not isinstance(definitions, Mapping) or not any(k in definitions for k in SECTIONS):
        raise ConfigError(
            "not RabbitMQ definitions: expected a JSON object with "
            "'exchanges', 'queues', 'bindings' or 'policies'"
        )
    chosen = _choose_vhost(definitions, vhost)

    def of_vhost(section: str) -> list[Mapping[str, Any]]:
        items = definitions.get(section) or []
        if not isinstance(items, list):
            raise ConfigError(f"definitions: {section!r} must be a list, not {_kind(items)}")
        for index, item in enumerate(items):
            _check_shape(section, index, item)
        return [i for i in items if chosen is None or i.get("vhost", chosen) == chosen]

    exchanges = tuple(
        ExchangeDecl(
            e["name"],
            e.get("type", "direct"),
            bool(e.get("durable", True)),
            bool(e.get("auto_delete", False)),
            bool(e.get("internal", False)),
            dict(e.get("arguments") or {}),
        )
        for e in of_vhost("exchanges")
        if not _builtin(e["name"])
    )
    queues = tuple(
        QueueDecl(
            q["name"],
            bool(q.get("durable", True)),
            bool(q.get("exclusive", False)),
            bool(q.get("auto_delete", False)),
            dict(q.get("arguments") or {}),
        )
        for q in of_vhost("queues")
        if not q["name"].startswith("amq.")
    )
    bindings = tuple(
        BindingDecl(
            b["source"],
            b["destination"],
            b.get("destination_type", "queue"),
            b.get("routing_key", ""),
            dict(b.get("arguments") or {}),
        )
        for b in of_vhost("bindings")
        if b.get("source")
    )
    return Declarations(
        exchanges, queues, bindings, policies_from_definitions(of_vhost("policies"))
    )


SECTIONS = (
    "exchanges",
    "queues",
    "bindings",
    "policies",
    "operator_policies",
    "parameters",
    "global_parameters",
    "vhosts",
    "rabbit_version",
    "rabbitmq_version",
)
"""Keys of which any one makes a JSON object RabbitMQ definitions (a file may hold only
policies, or only vhosts)."""


@dataclass(frozen=True)
class NotImported:
    """Objects of one kind that a topology file cannot hold, so `import` leaves them out."""

    kind: str
    """What they are, as a person says it: ``policies``, ``shovels``, ``vhost limits``."""
    names: tuple[str, ...]

    def describe(self) -> str:
        """One warning line: count, kind, every name."""
        listed = ", ".join(repr(n) for n in self.names)
        kind = self.kind if len(self.names) != 1 else _SINGULAR.get(self.kind, self.kind)
        return f"{len(self.names)} {kind} not imported (a topology file has none): {listed}"


_SINGULAR = {
    "policies": "policy",
    "operator policies": "operator policy",
    "shovels": "shovel",
    "federation upstreams": "federation upstream",
    "federation upstream sets": "federation upstream set",
    "vhost limits": "vhost limit",
    "global parameters": "global parameter",
}


# Parameter components, by the name of their kind; any other component is named as is.
_COMPONENTS = {
    "shovel": "shovels",
    "federation-upstream": "federation upstreams",
    "federation-upstream-set": "federation upstream sets",
    "vhost-limits": "vhost limits",
}
# Global parameters every broker exports: not the definitions' own.
_AUTOMATIC_GLOBALS = {"cluster_name", "internal_cluster_id"}


def not_imported(definitions: Mapping[str, Any], vhost: str | None = None) -> list[NotImported]:
    """What a vhost's definitions hold beyond exchanges, queues and bindings, by kind.

    Operator policies, parameters (shovels, federation upstreams, vhost limits, any other
    component), vhost limits written on the vhost and global parameters. Policies are
    part of the topology (``policies:``), so they are imported, not listed. Users,
    permissions and the vhosts themselves are the broker's, not a topology's, and are not
    listed.
    """
    chosen = _choose_vhost(definitions, vhost)

    def named(section: str) -> list[Mapping[str, Any]]:
        items = definitions.get(section)
        return [
            i
            for i in (items if isinstance(items, list) else [])
            if isinstance(i, Mapping) and (chosen is None or i.get("vhost", chosen) == chosen)
        ]

    found: dict[str, list[str]] = {}
    found["operator policies"] = [str(p.get("name")) for p in named("operator_policies")]
    for param in named("parameters"):
        component = str(param.get("component"))
        kind = _COMPONENTS.get(component, f"parameters of component {component!r}")
        found.setdefault(kind, []).append(str(param.get("name")))
    for host in definitions.get("vhosts") or []:
        if not isinstance(host, Mapping) or (chosen is not None and host.get("name") != chosen):
            continue
        limits = host.get("limits")
        if limits:
            names = list(limits) if isinstance(limits, Mapping) else [str(x) for x in limits]
            found.setdefault("vhost limits", []).extend(f"{host.get('name')}: {n}" for n in names)
    found["global parameters"] = [
        str(g.get("name"))
        for g in definitions.get("global_parameters") or []
        if isinstance(g, Mapping) and g.get("name") not in _AUTOMATIC_GLOBALS
    ]
    return [NotImported(kind, tuple(names)) for kind, names in found.items() if names]


def retry_metadata(definitions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The retry policies an export of rabbitflow kept under `METADATA_KEY`, by queue."""
    meta = definitions.get(METADATA_KEY)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("retry"), Mapping):
        return {}
    return {str(k): dict(v) for k, v in meta["retry"].items() if isinstance(v, Mapping)}


_REQUIRED = {
    "exchanges": ("name",),
    "queues": ("name",),
    "bindings": ("source", "destination"),
    "policies": ("name", "pattern"),
}


def _check_shape(section: str, index: int, item: Any) -> None:
    """One clear line for an object RabbitMQ would not have written (no traceback)."""
    where = f"definitions: {section}[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be an object, not {_kind(item)}")
    for key in _REQUIRED[section]:
        if not isinstance(item.get(key), str):
            raise ConfigError(f"{where} has no string {key!r}")
    if not isinstance(item.get("arguments") or {}, Mapping):
        raise ConfigError(f"{where} ({item.get('name', '')!r}): 'arguments' must be an object")


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else type(value).__name__


def _builtin(exchange: str) -> bool:
    return exchange == "" or exchange.startswith("amq.")


def _choose_vhost(definitions: Mapping[str, Any], vhost: str | None) -> str | None:
    named = {
        str(i["vhost"])
        for s in ("exchanges", "queues", "bindings", "policies")
        for i in definitions.get(s) or []
        if isinstance(i, Mapping) and "vhost" in i
    }
    if vhost is not None:
        if named and vhost not in named:
            raise ConfigError(
                f"the definitions hold no objects of vhost {vhost!r} "
                f"(they hold {', '.join(sorted(named))})"
            )
        return vhost
    if len(named) > 1:
        raise ConfigError(
            f"the definitions hold several vhosts ({', '.join(sorted(named))}): "
            "choose one with --vhost"
        )
    return None
