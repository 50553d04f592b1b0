"""RabbitMQ definitions written by ``rabbitflow export``."""

from __future__ import annotations

from rabbitflow.render.definitions import to_definitions, worker_owned_queues
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand

TOPOLOGY = """
version: 1
exchanges:
  events: {type: topic}
queues:
  jobs:
    type: quorum
    retry: {max_retries: 1, delay: 5s}
    bind: [{exchange: events, routing_key: "job.*"}]
  replies:
    exclusive: true
    bind: [{exchange: events, routing_key: reply}]
"""


def test_definitions_hold_every_object_with_its_vhost_and_arguments() -> None:
    topology = load_text(TOPOLOGY)
    document = to_definitions(expand(topology), "prod", topology)
    assert document["vhosts"] == [{"name": "prod"}]
    queues = {q["name"]: q for q in document["queues"]}
    assert set(queues) == {"jobs", "jobs.retry.5s", "jobs.dlq"}
    assert queues["jobs"] == {
        "name": "jobs",
        "vhost": "prod",
        "durable": True,
        "auto_delete": False,
        "arguments": {"x-queue-type": "quorum", "x-dead-letter-exchange": "jobs.dlx"},
    }
    assert {
        "name": "jobs.dlx",
        "vhost": "prod",
        "type": "fanout",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    } in document["exchanges"]
    assert {
        "source": "events",
        "vhost": "prod",
        "destination": "jobs",
        "destination_type": "queue",
        "routing_key": "job.*",
        "arguments": {},
    } in document["bindings"]
    assert document["rabbitflow"] == {
        "version": 1,
        "retry": {"jobs": {"max_retries": 1, "delay": 5000}},
    }


def test_worker_owned_queues_and_their_bindings_are_left_out() -> None:
    decls = expand(load_text(TOPOLOGY))
    document = to_definitions(decls, "/")
    assert "replies" not in {q["name"] for q in document["queues"]}
    assert "replies" not in {b["destination"] for b in document["bindings"]}
    assert worker_owned_queues(decls) == ["replies"]
