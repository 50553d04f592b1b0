"""``policies:`` against the real broker: declare, plan, export/import, enforcement."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import aio_pika
import httpx
import pytest
from ops_helpers import DATA, MANAGEMENT_URL, Result

from rabbitflow.render.adopt import canonical
from rabbitflow.topology import load_topology

pytestmark = pytest.mark.broker

FILE = str(DATA / "policies.yaml")


def _policies(vhost: str) -> dict[str, dict[str, object]]:
    quoted = httpx.URL(f"/{vhost}").raw_path.decode()[1:]
    with httpx.Client(auth=("guest", "guest"), timeout=10) as api:
        answer = api.get(f"{MANAGEMENT_URL}/api/policies/{quoted}")
    answer.raise_for_status()
    return {p["name"]: p for p in answer.json()}


async def test_declare_sets_policies_the_broker_shows_and_enforces(
    cli: Callable[..., Result], vhost: str, amqp_url: str
) -> None:
    result = cli("declare", FILE)
    assert result.code == 0, result.err
    assert "created  policy   orders-limits" in result.out

    live = _policies(vhost)
    assert live["orders-limits"]["pattern"] == "^orders\\."
    assert live["orders-limits"]["apply-to"] == "queues"
    assert live["orders-limits"]["priority"] == 1
    assert live["orders-limits"]["definition"] == {"max-length": 3, "overflow": "reject-publish"}
    assert live["orders-unrouted"]["apply-to"] == "exchanges"

    # The policy takes effect: the fourth publish to the matching queue is nacked.
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("orders")
        for i in range(3):
            await exchange.publish(aio_pika.Message(str(i).encode()), "capped")
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await exchange.publish(aio_pika.Message(b"4"), "capped")
    finally:
        await connection.close()

    again = cli("declare", FILE)
    assert "exists   policy   orders-limits" in again.out


def test_plan_in_sync_then_a_changed_definition_exits_2_naming_the_policy(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("declare", FILE).code == 0
    in_sync = cli("plan", FILE)
    assert in_sync.code == 0, in_sync.out
    assert "in sync" in in_sync.out

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        Path(FILE).read_text().replace("max-length: 3", "max-length: 5"), encoding="utf-8"
    )
    result = cli("plan", str(changed))
    assert result.code == 2
    assert (
        "differ policy 'orders-limits': definition.max-length 3 (broker) -> 5 (files)" in result.out
    )

    assert cli("declare", str(changed)).code == 0
    assert cli("plan", str(changed)).code == 0


def test_export_then_import_gives_back_the_policies(
    cli: Callable[..., Result], vhost: str, tmp_path: Path
) -> None:
    definitions = tmp_path / "definitions.json"
    assert cli("export", FILE, "-o", str(definitions)).code == 0
    document = json.loads(definitions.read_text())
    assert {p["name"] for p in document["policies"]} == {"orders-limits", "orders-unrouted"}
    assert all(p["vhost"] == vhost for p in document["policies"])

    # The broker's own importer takes them (the exported file is real definitions) …
    quoted = httpx.URL(f"/{vhost}").raw_path.decode()[1:]
    with httpx.Client(auth=("guest", "guest"), timeout=10) as api:
        api.post(f"{MANAGEMENT_URL}/api/definitions/{quoted}", json=document).raise_for_status()
    assert set(_policies(vhost)) == {"orders-limits", "orders-unrouted"}

    # … and import reads them back into the same topology.
    yaml_out = tmp_path / "imported.yaml"
    result = cli("import", str(definitions), "-o", str(yaml_out))
    assert result.code == 0, result.err
    assert canonical(load_topology(yaml_out)) == canonical(load_topology(FILE))
    assert cli("plan", str(yaml_out)).code == 0


def test_policies_without_the_management_api_are_one_clear_line(
    cli: Callable[..., Result],
) -> None:
    result = cli("declare", FILE, env={"RABBITFLOW_MANAGEMENT_URL": "http://127.0.0.1:1"})
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert "the topology has 2 policies, set through the management API" in lines[0]
    assert "rabbitmq-plugins enable rabbitmq_management" in lines[0]


def test_an_apply_to_3_10_does_not_know_is_refused_clearly(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    newer = tmp_path / "newer.yaml"
    newer.write_text(
        Path(FILE).read_text().replace("apply_to: queues", "apply_to: quorum_queues"),
        encoding="utf-8",
    )
    version = httpx.get(f"{MANAGEMENT_URL}/api/overview", auth=("guest", "guest")).json()[
        "rabbitmq_version"
    ]
    result = cli("declare", str(newer))
    if tuple(int(x) for x in version.split(".")[:2]) >= (3, 12):
        assert result.code == 0, result.err
        return
    assert result.code == 1
    assert "apply_to quorum_queues needs RabbitMQ 3.12 or newer" in result.err
    assert len(result.err.strip().splitlines()) == 1
