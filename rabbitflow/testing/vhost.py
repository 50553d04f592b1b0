"""A throwaway vhost on a real broker: created through the management API, the topology
declared in it, deleted afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httpx

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import declare
from rabbitflow.errors import ManagementError
from rabbitflow.settings import mask_url, vhost_url
from rabbitflow.topology.expand import expand
from rabbitflow.topology.loader import load_topology
from rabbitflow.topology.schema import Topology

TopologyArg = str | list[str] | Topology | None
"""What a vhost is declared with: a file, several, a `Topology`, or nothing."""


@dataclass(frozen=True)
class VirtualHost:
    """A vhost made for a test."""

    name: str
    url: str
    """The AMQP URL of the vhost (what `App(url=...)` and `run_app` take)."""
    management_url: str


def _credentials(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return unquote(parts.username or "guest"), unquote(parts.password or "guest")


def _api(management_url: str, amqp_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=management_url.rstrip("/") + "/api", auth=_credentials(amqp_url), timeout=10
    )


def create_vhost(management_url: str, amqp_url: str, name: str) -> None:
    """Create ``name`` and give the URL's user every permission on it.

    Raises:
        ManagementError: the management API refused or did not answer.
    """
    user, _ = _credentials(amqp_url)
    quoted = quote(name, safe="")
    try:
        with _api(management_url, amqp_url) as api:
            api.put(f"/vhosts/{quoted}").raise_for_status()
            api.put(
                f"/permissions/{quoted}/{quote(user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
    except httpx.HTTPError as exc:
        raise ManagementError(
            f"cannot create vhost {name!r} through "
            f"{mask_url(management_url)}: {exc} (is the management plugin "
            "enabled, and may this user create vhosts?)"
        ) from None


def delete_vhost(management_url: str, amqp_url: str, name: str) -> None:
    """Delete ``name`` (and everything in it); a missing vhost is not an error."""
    with _api(management_url, amqp_url) as api:
        response = api.delete(f"/vhosts/{quote(name, safe='')}")
        if response.status_code not in (200, 201, 204, 404):
            response.raise_for_status()


async def declare_topology(url: str, topology: TopologyArg) -> None:
    """Declare a topology (files or a `Topology`) on the broker at ``url``."""
    if topology is None:
        return
    decls = expand(load_topology(topology))
    connection = await connect(url, name="rabbitflow-testing")
    try:
        await declare(connection, decls, include_worker_owned=False)
    finally:
        await connection.close()


@contextmanager
def temporary_vhost(
    amqp_url: str, management_url: str, *, topology: TopologyArg = None, prefix: str = "rf-test"
) -> Iterator[VirtualHost]:
    """A fresh vhost with ``topology`` declared, deleted on exit even after an error.

    Synchronous, so that it serves fixtures of any scope; the declaration runs in an
    event loop of its own.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    create_vhost(management_url, amqp_url, name)
    try:
        vhost = VirtualHost(name, vhost_url(amqp_url, name), management_url)
        if topology is not None:
            asyncio.run(declare_topology(vhost.url, topology))
        yield vhost
    finally:
        delete_vhost(management_url, amqp_url, name)
