"""Finding a work queue's DLQ from the topology (no broker)."""

from __future__ import annotations

import pytest

from rabbitflow.errors import ConfigError
from rabbitflow.topology import load_text
from rabbitflow.topology.dead_letters import (
    DeadLetterQueue,
    find_dead_letter_queue,
    topic_matches,
)

TOPOLOGY = load_text("""
version: 1
exchanges:
  dead: {type: topic}
queues:
  a: {dead_letter: true}
  b: {dead_letter: {exchange: dead, routing_key: failed.b}}
  c: {dead_letter: {exchange: dead}}
  plain: {}
  dead.all:
    bind: [{exchange: dead, routing_key: "failed.*"}]
""")


def test_the_default_is_q_dlq() -> None:
    assert find_dead_letter_queue("x") == DeadLetterQueue("x.dlq", "x")
    assert find_dead_letter_queue("a", TOPOLOGY) == DeadLetterQueue("a.dlq", "a")


def test_the_mapping_form_finds_the_one_bound_queue() -> None:
    assert find_dead_letter_queue("b", TOPOLOGY) == DeadLetterQueue("dead.all", "b", True)


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("c", "expected one queue bound to receive them, found none"),
        ("plain", "keeps no dead letters"),
        ("zzz", "is not in the topology files"),
    ],
)
def test_no_single_dlq_is_a_clear_error(queue: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        find_dead_letter_queue(queue, TOPOLOGY)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("#", "x.y", True),
        ("*.b.#", "a.b.c.d", True),
        ("a.b", "a.c", False),
    ],
)
def test_topic_patterns(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected
