"""RabbitMQ definitions (the JSON of ``rabbitmqctl export_definitions``) to and from
declarations.

`to_definitions` writes what ``rabbitmqctl import_definitions`` and the management API's
``POST /api/definitions/{vhost}`` accept; `declarations_from_definitions` reads a broker's
export (or the live ``GET /api/definitions/{vhost}``) back into the declarations `expand`
produces, so both sides can be compared or folded into a topology (`rabbitflow.render.adopt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rabbitflow.topology.definitions import declarations_from_definitions
from rabbitflow.topology.expand import Declarations
from rabbitflow.topology.schema import Topology

__all__ = [
    "METADATA_KEY",
    "RABBIT_VERSION",
    "declarations_from_definitions",
    "retry_metadata",
    "to_definitions",
    "worker_owned_queues",
]

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


def retry_metadata(definitions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The retry policies an export of rabbitflow kept under `METADATA_KEY`, by queue."""
    meta = definitions.get(METADATA_KEY)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("retry"), Mapping):
        return {}
    return {str(k): dict(v) for k, v in meta["retry"].items() if isinstance(v, Mapping)}
