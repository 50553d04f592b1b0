"""``export --format k8s``: operator resources and KEDA ScaledObjects, checked against
JSON schemas derived from the projects' CRDs (tests/data/k8s, see derive_schemas.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from rabbitflow.cli.main import main
from rabbitflow.render.k8s import Cluster, binding_name, k8s_name, to_k8s
from rabbitflow.topology import load_text, load_topology
from rabbitflow.topology.expand import expand

ROOT = Path(__file__).parents[3]
SCHEMAS = {
    kind: json.loads((ROOT / "tests" / "data" / "k8s" / f"{kind.lower()}.schema.json").read_text())
    for kind in ("Exchange", "Queue", "Binding", "Policy", "ScaledObject")
}
EXAMPLES = ["orders", "media", "rpc"]


def check(document: dict[str, Any]) -> None:
    jsonschema.validate(document, SCHEMAS[document["kind"]])


def export(args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["export", *args, "--format", "k8s"])
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_object_of_an_example_is_a_valid_resource_of_the_cluster(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = f"topologies/{name}.yaml"
    docs = export(
        [file, "--cluster", "prod-rabbit", "--vhost", "shop", "--app", f"workers.{name}:app"],
        monkeypatch,
    )
    for doc in docs:
        check(doc)
    topology_docs = [d for d in docs if d["kind"] != "ScaledObject"]
    assert {d["spec"]["rabbitmqClusterReference"]["name"] for d in topology_docs} == {"prod-rabbit"}
    assert {d["spec"]["vhost"] for d in topology_docs} == {"shop"}
    decls = expand(load_topology(ROOT / file))
    assert sorted(d["spec"]["name"] for d in docs if d["kind"] == "Exchange") == sorted(
        e.name for e in decls.exchanges
    )
    assert sorted(d["spec"]["name"] for d in docs if d["kind"] == "Queue") == sorted(
        q.name for q in decls.queues
    )
    bindings = [d["spec"] for d in docs if d["kind"] == "Binding"]
    assert sorted((b["source"], b["destination"], b["routingKey"]) for b in bindings) == sorted(
        (b.source, b.destination, b.routing_key) for b in decls.bindings
    )
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names))


def test_generated_retry_and_dead_letter_objects_are_resources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = export(["topologies/orders.yaml", "--cluster", "c"], monkeypatch)
    queues = {d["spec"]["name"]: d["spec"] for d in docs if d["kind"] == "Queue"}
    retry = queues["payments.charge.retry.200ms"]
    assert retry["type"] == "quorum"
    assert retry["arguments"] == {
        "x-message-ttl": 200,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "payments.charge",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert queues["payments.charge.dlq"]["type"] == "quorum"
    assert "type" not in queues["notify.email"]  # classic: the broker's default
    assert queues["payments.charge"]["deletionPolicy"] == "retain"
    exchanges = {d["spec"]["name"]: d["spec"] for d in docs if d["kind"] == "Exchange"}
    assert exchanges["payments.charge.dlx"]["type"] == "fanout"
    assert exchanges["orders"]["arguments"] == {"alternate-exchange": "orders.unrouted"}


def test_one_scaled_object_per_handler_queue_targets_its_prefetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = export(
        [
            "topologies/orders.yaml",
            "--cluster",
            "c",
            "--namespace",
            "shop",
            "--app",
            "workers.orders:app",
            "--min-replicas",
            "1",
            "--max-replicas",
            "7",
        ],
        monkeypatch,
    )
    from workers.orders import app

    scaled = {
        d["metadata"]["annotations"]["rabbitflow.dev/name"]: d
        for d in docs
        if d["kind"] == "ScaledObject"
    }
    assert set(scaled) == set(app.handlers)
    charge = scaled["payments.charge"]
    assert charge["metadata"]["namespace"] == "shop"
    assert charge["spec"]["scaleTargetRef"] == {"name": "workers-orders-payments.charge"}
    assert (charge["spec"]["minReplicaCount"], charge["spec"]["maxReplicaCount"]) == (1, 7)
    [trigger] = charge["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["value"] == str(app.handlers["payments.charge"].prefetch) == "8"
    assert trigger["metadata"]["queueName"] == "payments.charge"
    assert all(d["metadata"]["namespace"] == "shop" for d in docs)


def test_a_partitioned_queue_scales_on_every_partition() -> None:
    topology = load_text("version: 1\nqueues:\n  orders:\n    partitions: {count: 3}\n")
    from rabbitflow.render.k8s import ScaleTarget

    target = ScaleTarget("orders", ["orders.p0", "orders.p1", "orders.p2"], 4, "w-orders")
    docs = to_k8s(expand(topology), Cluster("c"), topology, [target])
    for doc in docs:
        check(doc)
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
    assert [t["metadata"]["queueName"] for t in scaled["spec"]["triggers"]] == [
        "orders.p0",
        "orders.p1",
        "orders.p2",
    ]


def test_policies_of_the_topology_become_policy_resources() -> None:
    """The renderer reads ``topology.policies`` when the topology has them."""
    topology = load_text("version: 1\nqueues:\n  orders.a: {}\n")
    policy = SimpleNamespace(
        pattern="^orders\\.",
        apply_to="queues",
        priority=1,
        definition={"max-length": 100000, "overflow": "reject-publish"},
    )
    with_policies = SimpleNamespace(queues=topology.queues, policies={"orders-limits": policy})
    docs = to_k8s(expand(topology), Cluster("c", "v"), with_policies)  # type: ignore[arg-type]
    [doc] = [d for d in docs if d["kind"] == "Policy"]
    check(doc)
    assert doc["spec"] == {
        "name": "orders-limits",
        "vhost": "v",
        "pattern": "^orders\\.",
        "applyTo": "queues",
        "priority": 1,
        "definition": {"max-length": 100000, "overflow": "reject-publish"},
        "rabbitmqClusterReference": {"name": "c"},
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("payments.charge.retry.200ms", "payments.charge.retry.200ms"),
        ("Orders_EU", None),
        ("a..b", None),
        (".leading", None),
        ("x" * 300, None),
        ("ü", None),
    ],
)
def test_k8s_names_are_rfc1123_subdomains(name: str, expected: str | None) -> None:
    got = k8s_name(name)
    pattern = SCHEMAS["Queue"]["properties"]["metadata"]["properties"]["name"]
    jsonschema.validate(got, pattern)
    if expected is not None:
        assert got == expected
    else:
        assert got != name and len(got) <= 253


def test_names_differing_only_by_case_stay_apart() -> None:
    assert k8s_name("Orders") != k8s_name("ORDERS")
    assert k8s_name("orders_eu") != k8s_name("orders-eu")


def test_two_keys_of_one_queue_are_two_bindings_with_distinct_names() -> None:
    topology = load_text(
        "version: 1\nexchanges:\n  e: {type: topic}\nqueues:\n"
        "  q:\n    bind: [{exchange: e, routing_keys: [a, b]}]\n"
    )
    decls = expand(topology)
    assert len({binding_name(b) for b in decls.bindings}) == 2


def test_the_schemas_catch_a_misspelt_field() -> None:
    topology = load_text("version: 1\nqueues:\n  q: {}\n")
    [queue] = to_k8s(expand(topology), Cluster("c"))
    queue["spec"]["autodelete"] = True
    with pytest.raises(jsonschema.ValidationError):
        check(queue)


def test_k8s_without_cluster_is_refused_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["export", "topologies/rpc.yaml", "--format", "k8s"])
    assert result.exit_code == 2
    assert "--format k8s needs --cluster NAME" in result.stderr
    assert "Traceback" not in result.output


def test_definitions_still_need_an_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["export", "topologies/rpc.yaml"])
    assert result.exit_code == 2
    assert "Missing option '-o' / '--output'" in result.stderr
