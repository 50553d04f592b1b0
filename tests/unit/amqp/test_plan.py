"""Comparing declarations with what the broker holds (``rabbitflow plan``), no broker."""

from __future__ import annotations

from typing import Any

from rabbitflow.amqp.plan import Action, Difference, compare, live_declarations
from rabbitflow.render.definitions import declarations_from_definitions, to_definitions
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import Declarations, expand

TOPOLOGY = """
version: 1
exchanges:
  events: {type: topic}
queues:
  jobs:
    max_length: 10
    bind: [{exchange: events, routing_key: "job.*"}]
  mine:
    exclusive: true
"""


def live(text: str = TOPOLOGY, **edit: Any) -> Declarations:
    document = to_definitions(expand(load_text(text)), "/")
    for section, (name, key, value) in edit.items():
        next(o for o in document[section] if o["name"] == name)[key] = value
    return declarations_from_definitions(document)


def test_in_sync_when_the_broker_holds_what_the_files_declare() -> None:
    plan = compare(expand(load_text(TOPOLOGY)), live())
    assert plan.in_sync
    assert plan.skipped == ("mine",)


def test_differences_name_the_argument_and_both_values() -> None:
    broker = live(
        queues=("jobs", "arguments", {"x-max-length": 20, "x-overflow": "drop-head"}),
        exchanges=("events", "durable", False),
    )
    plan = compare(expand(load_text(TOPOLOGY)), broker)
    changes = {c.name: c for c in plan.changes}
    assert changes["'jobs'"].action is Action.DIFFER
    assert changes["'jobs'"].differences == (
        Difference("x-max-length", 20, 10),
        Difference("x-overflow", "drop-head", None),
    )
    assert changes["'events'"].differences == (Difference("durable", False, True),)
    assert changes["'jobs'"].describe() == (
        "differ queue 'jobs': x-max-length 20 (broker) -> 10 (files); "
        "x-overflow 'drop-head' (broker) -> (not set) (files)"
    )


def test_objects_to_create_and_objects_in_no_file() -> None:
    declared = expand(load_text(TOPOLOGY.replace("  mine:", "  new.one: {}\n  mine:")))
    broker = live(TOPOLOGY + "  old.one: {}\n")
    plan = compare(declared, broker)
    assert {(c.action, c.kind, c.name) for c in plan.changes} == {
        (Action.CREATE, "queue", "'new.one'"),
        (Action.EXTRA, "queue", "'old.one'"),
    }


def test_a_binding_key_change_is_one_to_create_and_one_extra() -> None:
    declared = expand(load_text(TOPOLOGY.replace('"job.*"', '"job.#"')))
    plan = compare(declared, live())
    assert [(c.action, c.name) for c in plan.changes] == [
        (Action.CREATE, "'events' -> queue 'jobs' (routing key 'job.#')"),
        (Action.EXTRA, "'events' -> queue 'jobs' (routing key 'job.*')"),
    ]


def test_true_is_not_one_and_classic_type_is_the_default() -> None:
    text = "version: 1\nqueues:\n  q: {single_active_consumer: true}\n"
    broker = live(text, queues=("q", "arguments", {"x-single-active-consumer": 1}))
    assert not compare(expand(load_text(text)), broker).in_sync
    plain = "version: 1\nqueues:\n  q: {}\n"
    shown = live(plain, queues=("q", "arguments", {"x-queue-type": "classic"}))
    assert compare(expand(load_text(plain)), shown).in_sync


class FakeManagement:
    """A `ManagementApi` answering from memory."""

    def __init__(self, definitions: dict[str, Any]) -> None:
        self._definitions = definitions

    async def definitions(self, vhost: str) -> dict[str, Any]:
        return self._definitions

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        return []


async def test_live_declarations_read_the_management_definitions() -> None:
    document = to_definitions(expand(load_text(TOPOLOGY)), "/")
    decls = await live_declarations(FakeManagement(document), "/")
    assert compare(expand(load_text(TOPOLOGY)), decls).in_sync
