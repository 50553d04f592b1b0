"""Kubernetes resources for a topology: the RabbitMQ messaging-topology-operator's
``Exchange``, ``Queue``, ``Binding`` and ``Policy`` (rabbitmq.com/v1beta1), and KEDA
``ScaledObject``s (keda.sh/v1alpha1) for the handlers' queues (DESIGN.md §10).

Every field written here exists in the operator's ``api/v1beta1/*_types.go`` and KEDA's
``scaledobject_types.go`` / RabbitMQ scaler; the tests validate the output against JSON
schemas derived from their CRDs (tests/data/k8s). One function renders one kind, so a
kind is added by writing its function and listing it in `to_k8s`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl
from rabbitflow.topology.schema import Topology

TOPOLOGY_API = "rabbitmq.com/v1beta1"
KEDA_API = "keda.sh/v1alpha1"
MAX_NAME = 253
"""Kubernetes object names are RFC 1123 subdomains: at most 253 characters."""
NAME_ANNOTATION = "rabbitflow.dev/name"
"""Annotation keeping the RabbitMQ name when the Kubernetes name had to differ."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "rabbitflow"}

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INVALID = re.compile(r"[^a-z0-9.-]+")
Resource = dict[str, Any]
"""One Kubernetes document."""


@dataclass(frozen=True)
class Cluster:
    """Where the resources go: the RabbitmqCluster and the vhost, and the namespace."""

    name: str
    vhost: str = "/"
    namespace: str | None = None


@dataclass(frozen=True)
class ScaleTarget:
    """One handler queue KEDA scales a Deployment on."""

    queue: str
    queues: Sequence[str]
    """The queues its handler consumes: the queue, or its partitions."""
    prefetch: int
    deployment: str
    """The Deployment running ``rabbitflow run MODULE:APP --queues QUEUE``."""


@dataclass(frozen=True)
class Scaling:
    """KEDA options: replica bounds and the environment variable holding the AMQP URL."""

    min_replicas: int = 0
    max_replicas: int = 10
    host_from_env: str = "RABBITFLOW_URL"


def k8s_name(name: str) -> str:
    """A valid Kubernetes object name for a RabbitMQ name.

    A name already valid (lowercase letters, digits, ``-`` and ``.``, each dot-separated
    part starting and ending with a letter or digit, at most 253 characters) is kept:
    ``payments.charge.retry.200ms``. Any other is lowercased, each run of other characters
    becomes ``-``, parts are trimmed to start and end with a letter or digit, and
    ``-`` plus 8 hex digits of the SHA-256 of the original name is appended, so two
    RabbitMQ names never map to one Kubernetes name (``Orders_EU`` -> ``orders-eu-1a2b3c4d``).
    """
    if len(name) <= MAX_NAME and _SUBDOMAIN.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    parts = [p.strip("-") for p in _INVALID.sub("-", name.lower()).split(".")]
    base = ".".join(p for p in parts if p)[: MAX_NAME - 9].rstrip("-.")
    return f"{base}-{digest}" if base else f"x-{digest}"


def _metadata(name: str, original: str, cluster: Cluster) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if cluster.namespace:
        meta["namespace"] = cluster.namespace
    meta["labels"] = dict(MANAGED_BY)
    meta["annotations"] = {NAME_ANNOTATION: original}
    return meta


def _reference(cluster: Cluster) -> dict[str, str]:
    return {"name": cluster.name}


def _resource(kind: str, name: str, original: str, cluster: Cluster, spec: Resource) -> Resource:
    return {
        "apiVersion": TOPOLOGY_API,
        "kind": kind,
        "metadata": _metadata(name, original, cluster),
        "spec": spec,
    }


def exchange_resource(e: ExchangeDecl, cluster: Cluster) -> Resource:
    """An operator ``Exchange``; its CRD has no ``internal`` field (see `unsupported`)."""
    spec: Resource = {
        "name": e.name,
        "vhost": cluster.vhost,
        "type": e.type,
        "durable": e.durable,
        "autoDelete": e.auto_delete,
        "rabbitmqClusterReference": _reference(cluster),
    }
    if e.arguments:
        spec["arguments"] = dict(e.arguments)
    return _resource("Exchange", k8s_name(e.name), e.name, cluster, spec)


def queue_resource(q: QueueDecl, cluster: Cluster) -> Resource:
    """An operator ``Queue``; ``deletionPolicy: retain`` keeps the messages when the
    resource is deleted (the operator's default deletes the queue)."""
    args = dict(q.arguments)
    kind = args.pop("x-queue-type", None)
    spec: Resource = {"name": q.name, "vhost": cluster.vhost}
    if kind is not None:
        spec["type"] = str(kind)
    spec.update(
        {
            "durable": q.durable,
            "autoDelete": q.auto_delete,
            "rabbitmqClusterReference": _reference(cluster),
            "deletionPolicy": "retain",
        }
    )
    if args:
        spec["arguments"] = args
    return _resource("Queue", k8s_name(q.name), q.name, cluster, spec)


def binding_name(b: BindingDecl) -> str:
    """``SOURCE.DESTINATION`` plus a hash of the whole binding: one queue may be bound
    to one exchange with several keys, and each binding is its own resource."""
    whole = repr((b.source, b.destination_type, b.destination, b.routing_key, _args(b)))
    digest = hashlib.sha256(whole.encode()).hexdigest()[:8]
    base = k8s_name(f"{b.source}.{b.destination}")[: MAX_NAME - 9].rstrip("-.")
    return f"{base}-{digest}"


def binding_resource(b: BindingDecl, cluster: Cluster) -> Resource:
    """An operator ``Binding`` (queue or exchange destination)."""
    spec: Resource = {
        "vhost": cluster.vhost,
        "source": b.source,
        "destination": b.destination,
        "destinationType": b.destination_type,
        "routingKey": b.routing_key,
        "rabbitmqClusterReference": _reference(cluster),
    }
    if b.arguments:
        spec["arguments"] = dict(b.arguments)
    label = f"{b.source} -> {b.destination_type} {b.destination} ({b.routing_key!r})"
    return _resource("Binding", binding_name(b), label, cluster, spec)


def policy_resource(name: str, policy: Any, cluster: Cluster) -> Resource:
    """An operator ``Policy`` from a ``policies:`` entry (pattern, apply_to, priority,
    definition)."""
    apply_to = getattr(policy, "apply_to", "all")
    spec: Resource = {
        "name": name,
        "vhost": cluster.vhost,
        "pattern": str(policy.pattern),
        "applyTo": str(getattr(apply_to, "value", apply_to)),
        "priority": int(getattr(policy, "priority", 0)),
        "definition": dict(policy.definition),
        "rabbitmqClusterReference": _reference(cluster),
    }
    return _resource("Policy", k8s_name(name), name, cluster, spec)


def scaled_object(target: ScaleTarget, cluster: Cluster, scaling: Scaling) -> Resource:
    """A KEDA ``ScaledObject``: one ``rabbitmq`` trigger per consumed queue, on queue
    length, aiming at ``prefetch`` ready messages per replica (what one replica holds
    in flight at once)."""
    triggers = [
        {
            "type": "rabbitmq",
            "name": k8s_name(queue),
            "metadata": {
                "protocol": "amqp",
                "mode": "QueueLength",
                "value": str(target.prefetch),
                "queueName": queue,
                "vhostName": cluster.vhost,
                "hostFromEnv": scaling.host_from_env,
            },
        }
        for queue in target.queues
    ]
    meta = _metadata(k8s_name(target.deployment), target.queue, cluster)
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"name": k8s_name(target.deployment)},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "triggers": triggers,
        },
    }


def to_k8s(
    declarations: Declarations,
    cluster: Cluster,
    topology: Topology | None = None,
    targets: Iterable[ScaleTarget] = (),
    scaling: Scaling | None = None,
) -> list[Resource]:
    """Every resource: exchanges, queues, bindings (generated ones included), the
    topology's policies when it has any, then a ScaledObject per target.

    Exclusive and auto-delete queues belong to a running worker and are left out, with
    their bindings, as `declare` skips them.
    """
    skipped = {q.name for q in declarations.queues if q.worker_owned}
    out = [exchange_resource(e, cluster) for e in declarations.exchanges]
    out += [queue_resource(q, cluster) for q in declarations.queues if q.name not in skipped]
    out += [
        binding_resource(b, cluster)
        for b in declarations.bindings
        if not (b.destination_type == "queue" and b.destination in skipped)
    ]
    policies: Mapping[str, Any] = getattr(topology, "policies", None) or {}
    out += [policy_resource(name, p, cluster) for name, p in policies.items()]
    out += [scaled_object(t, cluster, scaling or Scaling()) for t in targets]
    return out


def unsupported(declarations: Declarations) -> list[str]:
    """What the operator's resources cannot carry, one note each."""
    return [
        f"exchange {e.name!r} is internal, which the operator's Exchange cannot express: "
        "it is created as a normal exchange"
        for e in declarations.exchanges
        if e.internal
    ]


def dump(resources: Sequence[Resource]) -> str:
    """The resources as one YAML stream (``---`` between documents)."""
    return yaml.safe_dump_all(resources, sort_keys=False, allow_unicode=True)


def _args(b: BindingDecl) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in b.arguments.items()))
