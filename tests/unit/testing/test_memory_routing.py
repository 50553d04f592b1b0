"""Exchange matching rules of the in-memory broker (pure functions)."""

from __future__ import annotations

import pytest

from rabbitflow.testing.memory.routing import hash_pick, headers_match, topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "", True),
        ("*", "", False),
        ("#.c", "c", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.c", "a.x.y.d", False),
        ("*.*", "a.b", True),
        ("a.b", "a.b", True),
        ("a.b", "a.bb", False),
    ],
)
def test_topic_matches_like_rabbitmq(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_headers_all_needs_every_key_and_any_one() -> None:
    binding = {"format": "mp4", "hd": "yes"}
    assert headers_match({**binding, "x-match": "all"}, {"format": "mp4", "hd": "yes"})
    assert not headers_match({**binding, "x-match": "all"}, {"format": "mp4"})
    assert headers_match({**binding, "x-match": "any"}, {"format": "mp4"})
    assert not headers_match({**binding, "x-match": "any"}, {"format": "avi"})


def test_headers_ignore_x_keys_unless_with_x() -> None:
    assert headers_match({"x-match": "all", "x-tenant": "a"}, {})
    assert not headers_match({"x-match": "all-with-x", "x-tenant": "a"}, {})
    assert headers_match({"x-match": "any-with-x", "x-tenant": "a"}, {"x-tenant": "a"})


def test_headers_void_value_asks_for_presence_only() -> None:
    assert headers_match({"trace": None}, {"trace": "anything"})
    assert not headers_match({"trace": None}, {})


def test_consistent_hash_keeps_a_key_on_one_destination_and_spreads_keys() -> None:
    spread = [("q0", 1), ("q1", 1), ("q2", 2)]
    picks = {key: hash_pick(spread, key) for key in (f"k{i}" for i in range(400))}
    assert all(hash_pick(spread, key) == q for key, q in picks.items())
    counts = {q: list(picks.values()).count(q) for q in ("q0", "q1", "q2")}
    assert 60 < counts["q0"] < 140
    assert 60 < counts["q1"] < 140
    assert 140 < counts["q2"] < 260
    assert hash_pick([], "k") is None
