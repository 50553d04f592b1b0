"""The pure parts of migrate and of policies in plan: what to migrate, who consumes."""

from __future__ import annotations

import pytest

from rabbitflow.amqp.migrate import (
    MARKER_ARGUMENT,
    MigrationError,
    classify_consumers,
    queues_to_migrate,
)
from rabbitflow.amqp.plan import Action, compare_policies
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import Declarations, PolicyDecl, QueueDecl, expand
from rabbitflow.topology.fingerprint import consumer_tag, fingerprint, tag_fingerprint
from rabbitflow.worker.runtime import routes_for

NEW = load_text(
    """
version: 1
exchanges: {orders: {type: topic}}
queues:
  work: {type: quorum, bind: [{exchange: orders, routing_key: a}]}
  other: {}
"""
)


def _live(*queues: QueueDecl) -> Declarations:
    return Declarations((), queues, ())


def test_a_queue_whose_type_changed_is_to_migrate_with_its_bindings() -> None:
    todo = queues_to_migrate(expand(NEW), _live(QueueDecl("work"), QueueDecl("other")))
    assert [m.name for m in todo] == ["work"]
    assert [b.routing_key for b in todo[0].bindings] == ["a"]
    assert "x-queue-type" in todo[0].describe


def test_a_half_migrated_queue_is_resumed_even_when_it_is_gone() -> None:
    temp = QueueDecl("work.migrate", arguments={MARKER_ARGUMENT: "work"})
    todo = queues_to_migrate(expand(NEW), _live(temp, QueueDecl("other")))
    assert [(m.name, m.live) for m in todo] == [("work", None)]


def test_asking_for_a_queue_with_nothing_to_migrate_is_an_error() -> None:
    with pytest.raises(MigrationError, match="nothing to migrate for queue 'other'"):
        queues_to_migrate(expand(NEW), _live(QueueDecl("work")), ["other"])


def test_consumers_are_told_apart_by_their_tag() -> None:
    old = QueueDecl("work")
    mine = fingerprint(old.durable, old.arguments)
    details = [
        {"consumer_tag": consumer_tag(mine, "1"), "channel_details": {"connection_name": "c1"}},
        {"consumer_tag": consumer_tag("0" * 12, "2"), "channel_details": {}},
        {"consumer_tag": "amq.ctag-xyz", "channel_details": {"connection_name": "c3"}},
    ]
    kinds = [c.kind for c in classify_consumers(details, old)]
    assert kinds == ["old worker", "worker", "other"]
    assert "rabbitflow worker of the old definition" in str(classify_consumers(details, old)[0])


def test_a_worker_route_carries_the_fingerprint_of_its_declared_queue() -> None:
    (route,) = routes_for(NEW, "work")
    assert route.definition == fingerprint(True, {"x-queue-type": "quorum"})
    assert tag_fingerprint(consumer_tag(route.definition, "x")) == route.definition


def test_classic_queue_type_does_not_change_the_fingerprint() -> None:
    assert fingerprint(True, {"x-queue-type": "classic"}) == fingerprint(True, {})


def test_policies_to_create_differing_and_extra() -> None:
    declared = (
        PolicyDecl("a", "^a", "queues", 0, {"max-length": 5}),
        PolicyDecl("b", "^b", "all", 1, {"message-ttl": 10}),
    )
    live = (
        PolicyDecl("a", "^a", "queues", 0, {"max-length": 3}),
        PolicyDecl("z", "^z", "all", 0, {"expires": 1000}),
    )
    changes = {(c.action, c.name): c for c in compare_policies(declared, live)}
    assert set(changes) == {
        (Action.DIFFER, "'a'"),
        (Action.CREATE, "'b'"),
        (Action.EXTRA, "'z'"),
    }
    assert changes[(Action.DIFFER, "'a'")].describe() == (
        "differ policy 'a': definition.max-length 3 (broker) -> 5 (files)"
    )
