"""Partitioned queues: what ``partitions:`` expands to, and what validation refuses."""

from __future__ import annotations

import textwrap

import pytest

from rabbitflow.errors import TopologyError
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import (
    Role,
    dead_letter_route,
    expand,
    logical_queue,
    physical_queues,
)
from rabbitflow.topology.schema import Topology

BASE = """\
version: 1
exchanges:
  orders: {type: topic}
  media: {type: headers}
queues:
"""


def load(queues: str, base: str = BASE) -> Topology:
    return load_text(base + textwrap.indent(textwrap.dedent(queues), "  "), "t.yaml")


def problems(queues: str, base: str = BASE) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load(queues, base)
    return [str(p) for p in info.value.problems]


ROUTING_KEYED = """\
orders.ship:
  bind:
    - exchange: orders
      routing_keys: [order.paid, order.rush]
  partitions: {count: 3, key: routing_key}
"""


def test_partitions_expand_to_a_consistent_hash_exchange_and_n_single_active_queues() -> None:
    decls = expand(load(ROUTING_KEYED))
    exchanges = {e.name: e for e in decls.exchanges}
    queues = {q.name: q for q in decls.queues}
    hash_ex = exchanges["orders.ship.partitions"]
    assert (hash_ex.type, dict(hash_ex.arguments), hash_ex.role) == (
        "x-consistent-hash",
        {},
        Role.PARTITION,
    )
    assert hash_ex.owner == "orders.ship"
    assert sorted(queues) == ["orders.ship.p0", "orders.ship.p1", "orders.ship.p2"]
    for q in queues.values():
        assert dict(q.arguments) == {"x-single-active-consumer": True}
        assert (q.durable, q.role, q.owner) == (True, Role.PARTITION, "orders.ship")


def test_the_queues_bindings_feed_the_hash_exchange_which_binds_each_partition_with_weight_1() -> (
    None
):
    bindings = {
        (b.source, b.destination, b.destination_type, b.routing_key)
        for b in expand(load(ROUTING_KEYED)).bindings
    }
    assert bindings == {
        ("orders", "orders.ship.partitions", "exchange", "order.paid"),
        ("orders", "orders.ship.partitions", "exchange", "order.rush"),
        ("orders.ship.partitions", "orders.ship.p0", "queue", "1"),
        ("orders.ship.partitions", "orders.ship.p1", "queue", "1"),
        ("orders.ship.partitions", "orders.ship.p2", "queue", "1"),
    }


def test_a_header_key_sets_hash_header_and_headers_bindings_keep_their_match() -> None:
    decls = expand(
        load("""\
        media.encode:
          bind:
            - exchange: media
              match: any
              headers: {format: mp4}
          partitions: {count: 2, key: {header: customer}}
        """)
    )
    exchanges = {e.name: e for e in decls.exchanges}
    assert dict(exchanges["media.encode.partitions"].arguments) == {"hash-header": "customer"}
    feed = [b for b in decls.bindings if b.source == "media"]
    assert len(feed) == 1
    assert feed[0].destination == "media.encode.partitions"
    assert dict(feed[0].arguments) == {"x-match": "any", "format": "mp4"}


def test_each_partition_gets_its_own_delay_queues_and_all_share_one_dead_letter_queue() -> None:
    decls = expand(
        load("""\
        pay:
          type: quorum
          max_length: 1000
          bind: [{exchange: orders, routing_key: "pay.#"}]
          partitions: {count: 2}
          retry: {max_retries: 2, delays: [100ms, 1s]}
        """)
    )
    exchanges = {e.name: e for e in decls.exchanges}
    queues = {q.name: q for q in decls.queues}
    assert sorted(queues) == [
        "pay.dlq",
        "pay.p0",
        "pay.p0.retry.100ms",
        "pay.p0.retry.1s",
        "pay.p1",
        "pay.p1.retry.100ms",
        "pay.p1.retry.1s",
    ]
    assert "pay" not in queues, "the partitioned queue itself is not declared"
    assert dict(queues["pay.p1"].arguments) == {
        "x-queue-type": "quorum",
        "x-max-length": 1000,
        "x-dead-letter-exchange": "pay.dlx",
        "x-single-active-consumer": True,
    }
    retry = queues["pay.p1.retry.1s"]
    assert retry.arguments["x-dead-letter-routing-key"] == "pay.p1", "back to its partition"
    assert retry.arguments["x-message-ttl"] == 1000
    assert (retry.role, retry.owner) == (Role.RETRY, "pay.p1")
    assert exchanges["pay.dlx"].type == "fanout"
    assert ("pay.dlx", "pay.dlq") in {(b.source, b.destination) for b in decls.bindings}
    topology = load("""\
        pay:
          partitions: {count: 2}
          retry: {max_retries: 1}
        """)
    assert dead_letter_route("pay", topology.queues["pay"]) == ("pay.dlx", "pay")


def test_physical_queues_are_the_partitions_or_the_queue_itself() -> None:
    topology = load("""\
        plain: {}
        parted:
          partitions: {count: 4}
        """)
    assert physical_queues(topology, "plain") == ["plain"]
    assert physical_queues(topology, "parted") == [f"parted.p{i}" for i in range(4)]
    assert physical_queues(topology, "elsewhere") == ["elsewhere"]
    assert logical_queue(topology, "parted.p3") == "parted"
    assert logical_queue(topology, "parted.p4") == "parted.p4"
    assert logical_queue(topology, "plain") == "plain"


def test_key_defaults_to_the_routing_key() -> None:
    partitions = load("q: {partitions: {count: 2}}").queues["q"].partitions
    assert partitions is not None
    assert (partitions.key, partitions.header) == ("routing_key", None)


@pytest.mark.parametrize(
    ("partitions", "message"),
    [
        ("{count: 0}", "queues.q.partitions.count: must be greater than or equal to 1"),
        ("{count: 1025}", "queues.q.partitions.count: must be less than or equal to 1024"),
        (
            "{count: 2, key: {header: ''}}",
            "queues.q.partitions.key: the header name must be a non-empty string",
        ),
        (
            "{count: 2, key: message_id}",
            "queues.q.partitions.key: expected routing_key or a mapping {header: NAME}",
        ),
        ("{count: 2, key: {header: a, other: b}}", "expected routing_key or a mapping"),
        (
            "{count: 2, keys: routing_key}",
            "queues.q.partitions.keys: unknown key 'keys' (did you mean 'key'?)",
        ),
        ("{key: routing_key}", "queues.q.partitions: missing required key 'count'"),
    ],
)
def test_impossible_partition_settings_are_reported_with_their_place(
    partitions: str, message: str
) -> None:
    found = problems(f"q:\n  partitions: {partitions}\n")
    assert len(found) == 1, found
    assert message in found[0]
    assert found[0].startswith("t.yaml:7:")


def test_partitions_are_not_for_streams() -> None:
    assert problems("s: {type: stream, partitions: {count: 2}}") == [
        "t.yaml:6:21: queues.s.partitions: partitions is for classic and quorum queues, not stream"
    ]


@pytest.mark.parametrize(
    "option", ["exclusive: true", "auto_delete: true", "single_active_consumer: false"]
)
def test_options_that_contradict_partitions_are_errors(option: str) -> None:
    found = problems(f"q: {{{option}, partitions: {{count: 2}}}}")
    assert len(found) == 1, found
    assert option.split(":")[0] in found[0]


def test_generated_partition_names_must_not_collide() -> None:
    found = problems(
        """\
        q:
          partitions: {count: 2}
          retry: {max_retries: 1, delay: 1s}
        q.p1: {}
        q.p0.retry.1s: {}
        """,
        BASE.replace("exchanges:\n", "exchanges:\n  q.partitions: {type: fanout}\n"),
    )
    assert any(
        "partitions generates exchange 'q.partitions', which is also declared" in p for p in found
    ), found
    assert any("partitions generates queue 'q.p1', which is also declared" in p for p in found), (
        found
    )
    assert any(
        "retry generates queue 'q.p0.retry.1s', which is also declared" in p for p in found
    ), found


def test_a_partition_colliding_with_another_queues_generated_name_is_an_error() -> None:
    found = problems("""\
        a: {partitions: {count: 1}}
        a.p0: {partitions: {count: 1}}
        """)
    assert any("'a.p0'" in p and "also declared" in p for p in found), found


def test_unpartitioned_queues_expand_as_before() -> None:
    decls = expand(load("q: {bind: [{exchange: orders, routing_key: a}], retry: {max_retries: 1}}"))
    assert {q.name for q in decls.queues} == {"q", "q.retry.1s", "q.dlq"}
    assert all(e.role is not Role.PARTITION for e in decls.exchanges)
