"""A broker's definitions (``rabbitmqctl export_definitions``, or the live
``GET /api/definitions/{vhost}``) read back into the declarations `expand` produces.

Input, not output: it lives with the topology so that `rabbitflow.amqp.plan` can compare
a live vhost with a topology without importing the renderers; writing definitions is
`rabbitflow.render.definitions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rabbitflow.errors import ConfigError
from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl


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
    if not isinstance(definitions, Mapping) or not any(
        k in definitions for k in ("exchanges", "queues", "bindings")
    ):
        raise ConfigError(
            "not RabbitMQ definitions: expected a JSON object with "
            "'exchanges', 'queues' and 'bindings'"
        )
    chosen = _choose_vhost(definitions, vhost)

    def of_vhost(section: str) -> list[Mapping[str, Any]]:
        items = definitions.get(section) or []
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
    return Declarations(exchanges, queues, bindings)


def _builtin(exchange: str) -> bool:
    return exchange == "" or exchange.startswith("amq.")


def _choose_vhost(definitions: Mapping[str, Any], vhost: str | None) -> str | None:
    named = {
        str(i["vhost"])
        for s in ("exchanges", "queues", "bindings")
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
