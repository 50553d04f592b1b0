"""A broker's definitions (``rabbitmqctl export_definitions``, or the live
``GET /api/definitions/{vhost}``) read back into the declarations `expand` produces.

Input, not output: it lives with the topology so that `rabbitflow.amqp.plan` can compare
a live vhost with a topology without importing the renderers; writing definitions is
`rabbitflow.render.definitions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rabbitflow.errors import ConfigError
from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl
from rabbitflow.topology.policies import policies_from_definitions


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
    chosen = choose_vhost(definitions, vhost)

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
    chosen = choose_vhost(definitions, vhost)

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


def choose_vhost(definitions: Mapping[str, Any], vhost: str | None) -> str | None:
    """The vhost to read: the one given (which the document must hold), else the only one.

    Raises:
        ConfigError: the document holds several vhosts and none was chosen, or not the one
            given.
    """
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
