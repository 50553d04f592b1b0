"""What the dashboard shows: the topology (from files or the live vhost) and its figures."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rabbitflow.amqp.connection import connect, vhost_of
from rabbitflow.amqp.depth import DepthProbe
from rabbitflow.amqp.management import HttpManagement, JsonObject, management_client
from rabbitflow.amqp.session import on_broker
from rabbitflow.amqp.status import (
    Layout,
    QueueStatus,
    layout_from_names,
    layout_from_topology,
    rows_from_management,
    status_from_amqp,
)
from rabbitflow.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    ManagementUnavailable,
    TopologyError,
)
from rabbitflow.render.adopt import adopt
from rabbitflow.render.definitions import declarations_from_definitions, retry_metadata
from rabbitflow.render.graph import Graph, build_graph
from rabbitflow.settings import Settings, mask_url
from rabbitflow.topology import Topology, load_text
from rabbitflow.topology.dead_letters import DeadLetterQueue, find_dead_letter_queue
from rabbitflow.topology.expand import Declarations, expand

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

R = TypeVar("R")


@dataclass(frozen=True)
class View:
    """The topology as drawn, and where each work queue keeps its dead letters."""

    graph: Graph
    topology: Topology | None
    dead_letter_queues: Mapping[str, DeadLetterQueue]
    origin: str
    """``files`` or ``live vhost``."""


def view_of_topology(topology: Topology, origin: str = "files") -> View:
    """The view of a topology read from files (or adopted from the broker)."""
    dlqs = {}
    for name in topology.queues:
        try:
            dlqs[name] = find_dead_letter_queue(name, topology)
        except ConfigError:
            continue  # keeps no dead letters, or no single queue receives them
    return View(build_graph(expand(topology)), topology, dlqs, origin)


def view_of_definitions(definitions: JsonObject) -> View:
    """The view of a live vhost: its definitions read back as a topology when they can
    be (retry and dead-letter queues recognised), else drawn as they are."""
    decls = declarations_from_definitions(definitions)
    try:
        topology = load_text(adopt(decls, retry_metadata(definitions)).to_yaml(), "<broker>")
    except TopologyError:
        return _plain_view(decls)
    return view_of_topology(topology, "live vhost")


def _plain_view(decls: Declarations) -> View:
    names = {q.name for q in decls.queues}
    dlqs = {
        q.name: DeadLetterQueue(f"{q.name}.dlq", q.name)
        for q in decls.queues
        if f"{q.name}.dlq" in names
    }
    return View(build_graph(decls), None, dlqs, "live vhost")


class Source:
    """The broker as the dashboard reads it: rates and unacked counts from the management
    API, ready counts and consumers exact from passive declares on one connection kept
    open (the management API's figures lag by its statistics interval, 5 s by default),
    and a connection of its own for each dead-letter operation."""

    def __init__(self, settings: Settings, topology: Topology | None) -> None:
        self.settings = settings
        self.vhost = vhost_of(settings.urls[0])
        self.broker = mask_url(settings.urls[0])
        self._topology = topology
        self._view = view_of_topology(topology) if topology is not None else None
        self._api: HttpManagement | None = None
        self._probe = DepthProbe()
        self._connection: AbstractConnection | None = None

    async def open(self) -> None:
        """Open the management client."""
        self._api = management_client(self.settings)

    async def close(self) -> None:
        """Close it, and the probe's connection."""
        if self._api is not None:
            await self._api.aclose()
        await self._probe.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def view(self, refresh: bool = False) -> View:
        """The topology shown: the files', or the live vhost's (read again on ``refresh``).

        Raises:
            RabbitflowError: when the live vhost cannot be read.
        """
        if self._view is not None and (self._topology is not None or not refresh):
            return self._view
        assert self._api is not None
        self._view = view_of_definitions(await self._api.definitions(self.vhost))
        return self._view

    async def status(self) -> dict[str, Any]:
        """Every figure the page shows, as JSON."""
        view = await self.view()
        note = None
        depths: dict[str, dict[str, Any]] = {}
        assert self._api is not None
        try:
            queues = await self._api.queues(self.vhost)
            layout = layout_from_topology(view.topology) if view.topology is not None else None
            rows = rows_from_management(queues, layout)
            depths = {str(q["name"]): _figures(q) for q in queues}
            source = "management"
        except ManagementUnavailable as exc:
            note = f"{exc}. Showing what AMQP tells: no unacked counts and no rates"
            rows = await self.on_broker(lambda c: status_from_amqp(c, view.topology))
            source = "amqp"
        if source == "management":
            layout = (
                layout_from_topology(view.topology)
                if view.topology is not None
                else layout_from_names(depths)
            )
            rows = await self._exact(view, layout, rows, depths)
        for row in rows:
            if row.dead_letter_queue and row.dead_letter_queue not in depths:
                depths[row.dead_letter_queue] = {"ready": row.dead_letters}
            depths.setdefault(row.queue, _row_figures(row))
        return {
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "note": mask_url(note) if note else None,
            "queues": [
                r.as_json() | {"has_dead_letters": r.queue in view.dead_letter_queues} for r in rows
            ],
            "depths": depths,
        }

    async def _exact(
        self,
        view: View,
        layout: Layout,
        rows: list[QueueStatus],
        depths: dict[str, dict[str, Any]],
    ) -> list[QueueStatus]:
        """Rows and depths with ready counts and consumers read by passive declare."""
        names = list(dict.fromkeys([*depths, *(r.queue for r in rows)]))
        try:
            connection = await self._probe_connection()
        except (BrokerError, BrokerUnavailable):
            return rows  # the management figures, a few seconds old, will do
        counts = await self._probe.counts(connection, names)
        for name, count in counts.items():
            if count is not None and name in depths:
                depths[name] |= {"ready": count[0], "consumers": count[1]}

        def ready(name: str | None) -> int | None:
            count = counts.get(name) if name else None
            return None if count is None else count[0]

        out = []
        for row in rows:
            count = counts.get(row.queue)
            if count is None:
                out.append(row)
                continue
            retry = [ready(r) for r in layout.retry_queues.get(row.queue, ())]
            dead = ready(row.dead_letter_queue)
            out.append(
                replace(
                    row,
                    ready=count[0],
                    consumers=count[1],
                    retrying=sum(r or 0 for r in retry) if retry else row.retrying,
                    dead_letters=dead if dead is not None else row.dead_letters,
                )
            )
        return out

    async def _probe_connection(self) -> AbstractConnection:
        if self._connection is None or self._connection.is_closed:
            self._connection = await connect(
                self.settings.urls,
                timeout=self.settings.connect_timeout,
                heartbeat=self.settings.heartbeat,
                name="rabbitflow dashboard",
            )
        return self._connection

    async def on_broker(self, work: Callable[[AbstractConnection], Awaitable[R]]) -> R:
        """Run ``work`` on a new connection (closed after)."""
        return await on_broker(self.settings, work, name="rabbitflow dashboard")


def _figures(q: Mapping[str, Any]) -> dict[str, Any]:
    stats = q.get("message_stats") or {}

    def rate(key: str) -> float:
        details = stats.get(key)
        return float(details.get("rate", 0.0)) if isinstance(details, Mapping) else 0.0

    return {
        "ready": q.get("messages_ready"),
        "unacked": q.get("messages_unacknowledged"),
        "consumers": q.get("consumers"),
        "publish_rate": rate("publish_details"),
        "deliver_rate": rate("deliver_get_details"),
    }


def _row_figures(row: QueueStatus) -> dict[str, Any]:
    return {
        "ready": row.ready,
        "unacked": row.unacked,
        "consumers": row.consumers,
        "publish_rate": row.publish_rate,
        "deliver_rate": row.deliver_rate,
    }
