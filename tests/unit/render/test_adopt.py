"""Folding a broker's objects back into a topology (``rabbitflow import``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from rabbitflow.render.adopt import adopt, canonical
from rabbitflow.render.definitions import (
    declarations_from_definitions,
    retry_metadata,
    to_definitions,
)
from rabbitflow.topology import load_text, load_topology
from rabbitflow.topology.expand import Declarations, expand

DATA = Path(__file__).parents[2] / "data" / "ops"
TOPOLOGIES = sorted(p.name for p in DATA.glob("*.yaml"))


def objects(decls: Declarations) -> set[str]:
    def key(obj: Any) -> str:
        fields = {k: v for k, v in asdict(obj).items() if k not in ("role", "owner")}
        return type(obj).__name__ + json.dumps(fields, sort_keys=True)

    return {key(o) for o in (*decls.exchanges, *decls.queues, *decls.bindings)}


def exported(name: str) -> dict[str, Any]:
    topology = load_topology(DATA / name)
    return json.loads(json.dumps(to_definitions(expand(topology), "/", topology)))


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_export_then_import_gives_an_equal_topology(name: str) -> None:
    document = exported(name)
    adopted = adopt(declarations_from_definitions(document), retry_metadata(document))
    assert canonical(load_text(adopted.to_yaml())) == canonical(load_topology(DATA / name))
    assert adopted.notes == []


def test_canonical_resolves_defaults_only() -> None:
    written = load_text(
        "version: 1\nexchanges:\n  h: {type: headers}\n  t: {type: topic}\nqueues:\n"
        "  q:\n    retry: {}\n    dead_letter: true\n"
        "    bind: [{exchange: h, headers: {a: 1}}, {exchange: t, routing_key: k}]\n"
    )
    implied = load_text(
        "version: 1\nexchanges:\n  h: {type: headers}\n  t: {type: topic}\nqueues:\n"
        "  q:\n    retry: {}\n"
        "    bind: [{exchange: h, match: all, headers: {a: 1}}, {exchange: t, routing_keys: [k]}]\n"
    )
    assert written != implied
    assert canonical(written) == canonical(implied)
    assert canonical(written) != canonical(
        load_text(
            "version: 1\nexchanges:\n  h: {type: headers}\n  t: {type: topic}\nqueues:\n"
            "  q:\n    retry: {}\n    dead_letter: false\n"
            "    bind: [{exchange: h, headers: {a: 1}}, {exchange: t, routing_key: k}]\n"
        )
    )


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_import_without_metadata_declares_the_same_objects(name: str) -> None:
    """A broker's own export lacks max_retries: the schedule is inferred, objects equal."""
    document = exported(name)
    del document["rabbitflow"]
    adopted = adopt(declarations_from_definitions(document))
    again = load_text(adopted.to_yaml())
    assert objects(expand(again)) == objects(expand(load_topology(DATA / name)))


def test_retry_delay_queues_fold_back_into_an_inferred_schedule() -> None:
    topology = load_text("version: 1\nqueues:\n  jobs:\n    retry: {max_retries: 3}\n")
    document = to_definitions(expand(topology), "/")
    adopted = adopt(declarations_from_definitions(document))
    queue = adopted.document["queues"]["jobs"]
    assert queue == {"retry": {"max_retries": 3, "delay": "1s"}}
    assert list(adopted.document["queues"]) == ["jobs"]
    assert adopted.notes == [
        "queues.jobs.retry: max_retries 3 is a guess (the broker does not store it): check it"
    ]
    assert adopted.to_yaml().startswith("# queues.jobs.retry: max_retries 3 is a guess")


def test_an_irregular_schedule_is_written_as_explicit_delays() -> None:
    topology = load_text(
        "version: 1\nqueues:\n  jobs:\n    retry: {max_retries: 3, delays: [1s, 7s, 30s]}\n"
    )
    adopted = adopt(declarations_from_definitions(to_definitions(expand(topology), "/")))
    assert adopted.document["queues"]["jobs"]["retry"] == {
        "max_retries": 3,
        "delays": ["1s", "7s", "30s"],
    }


def test_objects_that_only_look_like_rabbitflows_stay_as_they_are() -> None:
    """Q.dlq with arguments of its own is not rabbitflow's: nothing is folded."""
    document = {
        "queues": [
            {
                "name": "q",
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-dead-letter-exchange": "q.dlx"},
            },
            {
                "name": "q.dlq",
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-max-length": 10},
            },
            {
                "name": "q.retry.5s",
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-message-ttl": 5000, "x-dead-letter-exchange": "elsewhere"},
            },
        ],
        "exchanges": [
            {
                "name": "q.dlx",
                "type": "fanout",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
        ],
        "bindings": [
            {
                "source": "q.dlx",
                "destination": "q.dlq",
                "destination_type": "queue",
                "routing_key": "",
                "arguments": {},
            }
        ],
    }
    adopted = adopt(declarations_from_definitions(document))
    queues = adopted.document["queues"]
    assert queues["q"] == {"arguments": {"x-dead-letter-exchange": "q.dlx"}}
    assert queues["q.dlq"]["max_length"] == 10
    assert "q.retry.5s" in queues
    again = load_text(adopted.to_yaml())
    assert objects(expand(again)) == objects(declarations_from_definitions(document))


def test_several_vhosts_need_a_choice() -> None:
    from rabbitflow.errors import ConfigError

    document = {"queues": [{"name": "a", "vhost": "one"}, {"name": "b", "vhost": "two"}]}
    with pytest.raises(ConfigError, match="several vhosts"):
        declarations_from_definitions(document)
    assert [q.name for q in declarations_from_definitions(document, "two").queues] == ["b"]


def test_builtin_exchanges_and_server_named_queues_are_left_out() -> None:
    document = {
        "exchanges": [{"name": "amq.topic", "type": "topic"}, {"name": "x", "type": "direct"}],
        "queues": [{"name": "amq.gen-abc"}, {"name": "q"}],
        "bindings": [{"source": "amq.topic", "destination": "q", "routing_key": "k"}],
    }
    decls = declarations_from_definitions(document)
    assert [e.name for e in decls.exchanges] == ["x"]
    assert [q.name for q in decls.queues] == ["q"]
    assert [b.source for b in decls.bindings] == ["amq.topic"]
    assert load_text(adopt(decls).to_yaml()).queues["q"].bind[0].exchange == "amq.topic"


def test_a_dlq_with_bindings_of_its_own_is_not_folded() -> None:
    topology = load_text(
        "version: 1\nexchanges:\n  alerts: {type: fanout}\nqueues:\n  q: {dead_letter: true}\n"
    )
    document = to_definitions(expand(topology), "/")
    document["bindings"].append(
        {
            "source": "alerts",
            "destination": "q.dlq",
            "destination_type": "queue",
            "routing_key": "",
            "arguments": {},
        }
    )
    declared = declarations_from_definitions(document)
    adopted = adopt(declared)
    assert "q.dlq" in adopted.document["queues"]
    assert objects(expand(load_text(adopted.to_yaml()))) == objects(declared)
