"""``export --format k8s|asyncapi``: turn an app's handlers into what the renderers take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from rabbitflow.cli.common import fail
from rabbitflow.render import asyncapi, k8s
from rabbitflow.settings import DEFAULT_PREFETCH, Settings
from rabbitflow.topology.expand import Declarations, physical_queues
from rabbitflow.topology.schema import Topology


def module_of(app_target: str) -> str:
    """``workers.orders:app`` -> ``workers-orders`` (the default Deployment prefix)."""
    return app_target.partition(":")[0].replace(".", "-").replace("_", "-")


def _prefetch(app: Any, spec: Any) -> int:
    settings = getattr(app, "settings", None)
    return int(spec.prefetch or getattr(settings, "prefetch", None) or DEFAULT_PREFETCH)


def scale_targets(topology: Topology, app: Any, prefix: str) -> list[k8s.ScaleTarget]:
    """One KEDA target per handler queue of the app."""
    return [
        k8s.ScaleTarget(
            queue,
            physical_queues(topology, queue),
            _prefetch(app, spec),
            f"{prefix}-{queue}",
        )
        for queue, spec in app.handlers.items()
    ]


def handler_docs(app: Any) -> list[asyncapi.HandlerDoc]:
    """What the AsyncAPI document says of each handler of the app."""
    return [
        asyncapi.HandlerDoc(
            queue,
            spec.name,
            spec.body_type,
            _prefetch(app, spec),
            spec.timeout,
            (getattr(spec.func, "__doc__", None) or "").strip() or None,
        )
        for queue, spec in app.handlers.items()
    ]


def write_k8s(
    topology: Topology,
    declarations: Declarations,
    cluster: k8s.Cluster,
    app: Any,
    scaling: k8s.Scaling,
    prefix: str,
    output: str,
) -> None:
    """Render and write the Kubernetes resources; notes go to stderr."""
    targets = scale_targets(topology, app, prefix) if app is not None else []
    resources = k8s.to_k8s(declarations, cluster, topology, targets, scaling)
    _write(output, k8s.dump(resources))
    for note in k8s.unsupported(declarations):
        click.echo(f"note: {note}", err=True)
    skipped = [q.name for q in declarations.queues if q.worker_owned]
    if skipped:
        click.echo(f"left out (declared by workers): {', '.join(skipped)}", err=True)
    if output != "-":
        kinds: dict[str, int] = {}
        for r in resources:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        click.echo(f"wrote {counts} for cluster {cluster.name!r} to {output}")


def write_asyncapi(
    topology: Topology,
    declarations: Declarations,
    vhost: str,
    app: Any,
    settings: Settings,
    files: Sequence[str],
    output: str,
) -> None:
    """Render and write the AsyncAPI document (YAML)."""
    parts = urlsplit(settings.urls[0])
    host = parts.hostname or "localhost"
    server = asyncapi.Server(f"{host}:{parts.port or 5672}", vhost)
    document = asyncapi.to_asyncapi(
        topology,
        declarations,
        vhost=vhost,
        handlers=handler_docs(app) if app is not None else (),
        title=f"rabbitflow: {', '.join(files)}",
        server=server,
    )
    _write(output, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    if output != "-":
        click.echo(
            f"wrote AsyncAPI {asyncapi.ASYNCAPI_VERSION}: {len(document['channels'])} channels, "
            f"{len(document['operations'])} operations to {output}"
        )


def _write(output: str, text: str) -> None:
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
