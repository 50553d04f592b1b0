"""``rabbitflow import`` against the real broker (issue 20): definitions loaded straight
into one vhost, imported to YAML and declared into another must give the same exchanges,
queues, bindings and arguments, compared through the management API; what `declare`
does not create must be named in import's messages."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_helpers import MANAGEMENT_URL, run_cli

pytestmark = pytest.mark.broker
IMPORT = Path(__file__).parents[2] / "data" / "import"
SAMPLES = IMPORT / "sample-configs"
# Every definitions file of tests/data/import the test broker can load: not the plugin
# exchange (no delayed-message plugin), not the shovels and federation parameters (no
# plugins), not the broken file of item 8.
LOADABLE = [
    IMPORT / "1_shared_dead_letter_exchange.json",
    IMPORT / "2_headers_with_x.json",
    IMPORT / "4_binding_to_absent_queue.json",
    IMPORT / "5_policies_only.json",
    IMPORT / "6_auto_delete_queue.json",
    # Real files of rabbitmq/sample-configs (1k-streams is left out: loading 1,000
    # streams takes minutes on the shared broker).
    SAMPLES / "1k-classic-queues.json.gz",
    SAMPLES / "1k-quorum-queues.json.gz",
    SAMPLES / "version-and-mirroring.yaml",
]


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{MANAGEMENT_URL}/api", auth=("guest", "guest"), timeout=120
    ) as client:
        yield client


@pytest.fixture
async def second_vhost(api: httpx.AsyncClient) -> AsyncIterator[str]:
    name = f"rf-test-import-rt-{uuid.uuid4().hex[:8]}"
    (await api.put(f"/vhosts/{name}")).raise_for_status()
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    (await api.put(f"/permissions/{name}/guest", json=permissions)).raise_for_status()
    try:
        yield name
    finally:
        await api.delete(f"/vhosts/{name}")


def read_definitions(path: Path) -> Any:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


async def live_objects(api: httpx.AsyncClient, vhost: str) -> dict[str, dict[str, Any]]:
    """Every exchange, queue and binding of a vhost, with every field that defines it."""
    quoted = httpx.URL(f"/{vhost}").raw_path.decode()[1:].replace("/", "%2F")
    exchanges = (await api.get(f"/exchanges/{quoted}")).json()
    queues = (await api.get(f"/queues/{quoted}")).json()
    bindings = (await api.get(f"/bindings/{quoted}")).json()
    out: dict[str, dict[str, Any]] = {}
    for e in exchanges:
        fields = ("type", "durable", "auto_delete", "internal", "arguments")
        out[f"exchange {e['name']!r}"] = {k: e[k] for k in fields}
    for q in queues:
        fields = ("durable", "auto_delete", "exclusive", "arguments")
        out[f"queue {q['name']!r}"] = {k: q[k] for k in fields}
    for b in bindings:
        ends = [b["source"], b["destination_type"], b["destination"], b["routing_key"]]
        key = json.dumps([*ends, b["arguments"]], sort_keys=True)
        out[f"binding {key}"] = {}
    return out


@pytest.mark.parametrize("path", LOADABLE, ids=lambda p: p.name)
async def test_definitions_imported_and_declared_equal_the_definitions_loaded(
    path: Path, vhost: str, second_vhost: str, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    document = read_definitions(path)
    (await api.post(f"/definitions/{vhost}", json=document)).raise_for_status()
    source = tmp_path / "definitions.json"
    source.write_text(json.dumps(document))
    topology = tmp_path / "topology.yaml"
    url = f"amqp://guest:guest@127.0.0.1:5672/{second_vhost}"
    imported = run_cli(url, "import", str(source), "-o", str(topology))
    assert imported.code == 0, imported.err
    declared = run_cli(url, "declare", str(topology), timeout=300)
    assert declared.code == 0, declared.err

    loaded, again = await live_objects(api, vhost), await live_objects(api, second_vhost)
    # What declare leaves out must be what import named: worker-owned queues (notes),
    # with their bindings (the default exchange's included).
    missing = set(loaded) - set(again)
    named = {
        line.split(":")[1].strip().removeprefix("queues.")
        for line in imported.err.splitlines()
        if line.startswith("note: ") and "`declare` skips it" in line
    }
    for key in missing:
        assert any(f"'{q}'" in key or f'"{q}"' in key for q in named), f"{key} is named nowhere"
    assert set(again) - set(loaded) == set()
    for key in set(loaded) & set(again):
        assert again[key] == loaded[key], key
    if path.name == "6_auto_delete_queue.json":
        assert named == {"events.live"}
        assert "queue 'events.live'" in missing
        plan = run_cli(url, "plan", str(topology))
        assert "skipped (declared by workers): events.live" in plan.out
    if path.name == "version-and-mirroring.yaml":
        assert imported.err.startswith("warning: 4 policies not imported")
