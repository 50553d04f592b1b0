"""``rabbitflow import`` on definitions files (issue 20): each file beside the topology it
must give and the lines it must print (tests/data/import/README.md)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rabbitflow.cli.main import main
from rabbitflow.render.adopt import adopt, check_imported
from rabbitflow.render.definitions import declarations_from_definitions, not_imported
from rabbitflow.testing.memory.routing import headers_match
from rabbitflow.topology import load_text, load_topology
from rabbitflow.topology.expand import expand

DATA = Path(__file__).parents[2] / "data" / "import"
SAMPLES = DATA / "sample-configs"
CASES = sorted(p.stem for p in DATA.glob("*.json"))


def run_import(path: Path, out: Path) -> Any:
    return CliRunner().invoke(main, ["import", path.name, "-o", str(out)])


@pytest.mark.parametrize("case", CASES)
def test_import_gives_the_expected_topology_and_messages(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(DATA)
    out = tmp_path / "topology.yaml"
    result = run_import(DATA / f"{case}.json", out)
    expected_yaml = DATA / f"{case}.yaml"
    assert result.stderr.splitlines() == (DATA / f"{case}.messages").read_text().splitlines()
    if expected_yaml.exists():
        assert result.exit_code == 0, result.stderr
        assert out.read_text() == expected_yaml.read_text()
        load_topology(out)  # what was written validates as a file, too
    else:
        assert result.exit_code == 1
        assert not out.exists()  # a refused file writes nothing
        assert "Traceback" not in result.output


def objects_of(document: dict[str, Any]) -> set[str]:
    decls = declarations_from_definitions(document)
    return {
        json.dumps(
            [type(o).__name__, o.__dict__ | {"role": None, "owner": None}],
            default=str,
            sort_keys=True,
        )
        for o in (*decls.exchanges, *decls.queues, *decls.bindings)
    }


def test_item1_a_shared_dead_letter_exchange_is_not_folded_into_one_queue() -> None:
    document = json.loads((DATA / "1_shared_dead_letter_exchange.json").read_text())
    adopted = adopt(declarations_from_definitions(document))
    assert "orders.dlx" in adopted.document["exchanges"]
    assert adopted.document["queues"]["invoices"]["dead_letter"] == {"exchange": "orders.dlx"}
    again = load_text(adopted.to_yaml())
    assert objects_of(json.loads(json.dumps(_definitions(again)))) == objects_of(document)


def _definitions(topology: Any) -> dict[str, Any]:
    from rabbitflow.render.definitions import to_definitions

    return to_definitions(expand(topology), "/")


def test_item1_a_dead_letter_exchange_of_one_queue_alone_is_still_folded() -> None:
    topology = load_text(
        "version: 1\nqueues:\n  orders: {dead_letter: true}\n  invoices: {dead_letter: true}\n"
    )
    adopted = adopt(declarations_from_definitions(_definitions(topology)))
    assert adopted.document["queues"] == {
        "orders": {"dead_letter": True},
        "invoices": {"dead_letter": True},
    }


def test_item2_with_x_variants_round_trip_and_route_in_memory() -> None:
    document = json.loads((DATA / "2_headers_with_x.json").read_text())
    topology = load_text(adopt(declarations_from_definitions(document)).to_yaml())
    assert objects_of(_definitions(topology)) == objects_of(document)
    args = {b.destination: dict(b.arguments) for b in expand(topology).bindings}
    # any-with-x: an x- header alone is enough; plain any ignores x- headers.
    assert headers_match(args["thumbs"], {"x-kind": "image"})
    assert not headers_match({"x-match": "any", "x-kind": "image"}, {"x-kind": "image"})
    assert headers_match(args["audit"], {"x-tenant": "acme"})
    assert not headers_match(args["audit"], {"x-tenant": "other"})


def test_item5_every_kind_of_a_real_shovels_file_is_named() -> None:
    document = json.loads(
        gzip.decompress((SAMPLES / "100-shovels-amqp-0.9.1.json.gz").read_bytes())
    )
    [shovels] = not_imported(document)
    assert shovels.kind == "shovels"
    assert len(shovels.names) == 100
    assert shovels.describe().startswith("100 shovels not imported")
    assert "'my-shovel-100'" in shovels.describe()


def test_item5_policies_of_another_vhost_are_not_listed() -> None:
    # Policies themselves are imported into policies: now; operator policies stay listed.
    document = {
        "queues": [{"name": "q", "vhost": "a"}, {"name": "r", "vhost": "b"}],
        "operator_policies": [{"name": "p", "vhost": "b", "pattern": ".*", "definition": {}}],
    }
    assert not_imported(document, "a") == []
    assert [k.names for k in not_imported(document, "b")] == [("p",)]


def test_item6_plan_names_the_auto_delete_queue_it_skips() -> None:
    from rabbitflow.amqp.plan import compare

    topology = load_topology(DATA / "6_auto_delete_queue.yaml")
    declared = expand(topology)
    result = compare(declared, declared)
    assert result.in_sync
    assert result.skipped == ("events.live",)


def large_definitions(queues: int, bindings_per_queue: int) -> dict[str, Any]:
    """``queues`` classic queues, each dead-lettering to its own Q.dlx/Q.dlq, each bound
    ``bindings_per_queue`` times to a topic exchange."""
    exchanges = [{"name": "events", "type": "topic"}]
    qs, bs = [], []
    for i in range(queues):
        name = f"q{i}"
        qs.append({"name": name, "arguments": {"x-dead-letter-exchange": f"{name}.dlx"}})
        qs.append({"name": f"{name}.dlq", "arguments": {}})
        exchanges.append({"name": f"{name}.dlx", "type": "fanout"})
        bs.append({"source": f"{name}.dlx", "destination": f"{name}.dlq", "routing_key": ""})
        bs += [
            {"source": "events", "destination": name, "routing_key": f"k.{i}.{j}"}
            for j in range(bindings_per_queue)
        ]
    return {"exchanges": exchanges, "queues": qs, "bindings": bs}


def test_item7_import_and_check_are_linear_in_queues_and_bindings() -> None:
    """10,000 queues with a dead-letter pair and 100,000 bindings: quadratic code (every
    queue scanning every queue and binding) took minutes; the bound is loose for a
    loaded 2-core machine."""
    document = large_definitions(10_000, 10)
    started = time.process_time()
    adopted = adopt(declarations_from_definitions(document))
    assert check_imported(adopted.document, "big.json") == []
    spent = time.process_time() - started
    assert len(adopted.document["queues"]) == 10_000
    assert adopted.document["queues"]["q7"]["dead_letter"] is True
    assert len(adopted.document["queues"]["q7"]["bind"][0]["routing_keys"]) == 10
    assert spent < 20, f"import of 10k queues / 100k bindings took {spent:.1f}s of CPU"


def test_item8_a_problem_names_the_definitions_object_not_a_generated_file(
    tmp_path: Path,
) -> None:
    long_name = "q" * 256
    document = {"queues": [{"name": long_name}], "exchanges": [], "bindings": []}
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {path}: queue {long_name!r} (in 'queues'): "
        "queue name is 256 bytes; AMQP allows at most 255"
    ]
    assert ".yaml:" not in result.stderr


@pytest.mark.parametrize(
    "name", ["1k-classic-queues.json.gz", "1k-quorum-queues.json.gz", "1k-streams.json.gz"]
)
def test_real_sample_configs_import_object_for_object(name: str) -> None:
    document = json.loads(gzip.decompress((SAMPLES / name).read_bytes()))
    adopted = adopt(declarations_from_definitions(document))
    assert check_imported(adopted.document, name) == []
    assert adopted.warnings == []
    topology = load_text(adopted.to_yaml())
    assert objects_of(_definitions(topology)) == objects_of(document)


def test_item2_the_memory_broker_routes_an_imported_with_x_topology_like_rabbitmq() -> None:
    from rabbitflow.testing.memory import MemoryBroker

    document = json.loads((DATA / "2_headers_with_x.json").read_text())
    decls = expand(load_text(adopt(declarations_from_definitions(document)).to_yaml()))
    broker = MemoryBroker("import-with-x")
    for e in decls.exchanges:
        broker.declare_exchange(
            e.name,
            e.type,
            durable=e.durable,
            auto_delete=e.auto_delete,
            internal=e.internal,
            arguments=dict(e.arguments),
        )
    for q in decls.queues:
        broker.declare_queue(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=dict(q.arguments),
            owner=None,
        )
    for b in decls.bindings:
        broker.bind(b.destination, b.destination_type, b.source, b.routing_key, b.arguments)
    assert broker.route("media", "", {"x-kind": "image"}) == ["thumbs"]
    assert broker.route("media", "", {"format": "png"}) == ["thumbs"]
    assert broker.route("media", "", {"x-tenant": "acme"}) == ["audit"]
    assert broker.route("media", "", {"x-tenant": "other", "tenant": "acme"}) == []


@pytest.mark.parametrize(
    ("document", "line"),
    [
        ({"queues": [{"durable": True}]}, "error: definitions: queues[0] has no string 'name'"),
        ({"queues": "q"}, "error: definitions: 'queues' must be a list, not str"),
        (
            {"bindings": [{"source": "x"}]},
            "error: definitions: bindings[0] has no string 'destination'",
        ),
        (
            {"queues": [{"name": "q", "arguments": [1]}]},
            "error: definitions: queues[0] ('q'): 'arguments' must be an object",
        ),
    ],
)
def test_malformed_definitions_give_one_line_not_a_traceback(
    document: dict[str, Any], line: str, tmp_path: Path
) -> None:
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [line]
