"""The one topic rule (rabbitflow.topology.matching), used by the topology and by the
in-memory broker alike."""

from __future__ import annotations

import pytest

from rabbitflow.testing.memory import routing
from rabbitflow.topology import dead_letters
from rabbitflow.topology.matching import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("#", "", True),
        ("*", "", False),
        ("*.#", "", False),
        ("#.*", "", False),
        ("#.#", "", True),
        ("", "", True),
        ("", "a", False),
        ("*.#", "a", True),
        ("a.#", "a", True),
        ("#.a", "a", True),
    ],
)
def test_the_empty_routing_key_has_no_words(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_every_user_of_the_rule_shares_the_one_function() -> None:
    assert dead_letters.topic_matches is topic_matches
    assert routing.topic_matches is topic_matches
