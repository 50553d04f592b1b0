"""``rabbitflow export`` / ``import`` against the real broker's definitions import."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_helpers import DATA, MANAGEMENT_URL, Result, run_cli

from rabbitflow.render.definitions import declarations_from_definitions
from rabbitflow.topology import load_topology
from rabbitflow.topology.expand import Declarations, expand

pytestmark = pytest.mark.broker
TOPOLOGIES = ["orders.yaml", "shipping.yaml", "minimal.yaml", "dlq.yaml"]


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{MANAGEMENT_URL}/api", auth=("guest", "guest"), timeout=30
    ) as client:
        yield client


@pytest.fixture
async def fresh_vhost(api: httpx.AsyncClient) -> AsyncIterator[str]:
    """A second, empty vhost for the import."""
    name = f"rf-test-import-{uuid.uuid4().hex[:8]}"
    (await api.put(f"/vhosts/{name}")).raise_for_status()
    (
        await api.put(
            f"/permissions/{name}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
        )
    ).raise_for_status()
    try:
        yield name
    finally:
        await api.delete(f"/vhosts/{name}")


def objects(decls: Declarations) -> set[str]:
    """The objects as comparable text, without rabbitflow's roles or argument order."""

    def key(obj: object) -> str:
        fields = {k: v for k, v in asdict(obj).items() if k not in ("role", "owner")}  # type: ignore[call-overload]  # decls are dataclasses
        return type(obj).__name__ + json.dumps(fields, sort_keys=True)

    return {key(o) for o in (*decls.exchanges, *decls.queues, *decls.bindings)}


@pytest.mark.parametrize("name", TOPOLOGIES)
async def test_export_imported_into_a_fresh_vhost_gives_the_declared_objects(
    name: str,
    cli: Callable[..., Result],
    declare: Callable[[str], Awaitable[Any]],
    vhost: str,
    fresh_vhost: str,
    api: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    await declare(name)
    out = tmp_path / "definitions.json"
    result = cli("export", str(DATA / name), "-o", str(out))
    assert result.code == 0, result.err
    posted = await api.post(f"/definitions/{fresh_vhost}", json=json.loads(out.read_text()))
    posted.raise_for_status()
    declared = declarations_from_definitions((await api.get(f"/definitions/{vhost}")).json())
    imported = declarations_from_definitions((await api.get(f"/definitions/{fresh_vhost}")).json())
    assert objects(imported) == objects(declared)
    assert objects(imported) == objects(expand(load_topology(DATA / name)))
    fresh_url = f"amqp://guest:guest@127.0.0.1:5672/{fresh_vhost}"
    in_sync = run_cli(fresh_url, "plan", str(DATA / name))
    assert in_sync.code == 0, in_sync.out


@pytest.mark.parametrize("name", TOPOLOGIES)
async def test_import_of_a_live_broker_export_round_trips(
    name: str,
    cli: Callable[..., Result],
    declare: Callable[[str], Awaitable[Any]],
    vhost: str,
    api: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """The broker's own export (no rabbitflow metadata) still gives the same objects."""
    await declare(name)
    exported = tmp_path / "broker.json"
    exported.write_text((await api.get(f"/definitions/{vhost}")).text)
    topology_file = tmp_path / "topology.yaml"
    result = cli("import", str(exported), "-o", str(topology_file))
    assert result.code == 0, result.err
    again = load_topology(topology_file)
    assert objects(expand(again)) == objects(expand(load_topology(DATA / name)))
    assert cli("plan", str(topology_file)).code == 0
