"""How a topic binding matches a routing key, as RabbitMQ does it: the one copy of the
rule, used by the topology (where do dead letters land) and the in-memory broker."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding key matches a routing key.

    Words are separated by dots; ``*`` stands for exactly one word and ``#`` for zero or
    more. An empty key has no words: ``#`` matches it, ``*`` and ``*.#`` do not (checked
    against RabbitMQ 3.10 in tests/integration/topology/test_topic_matching.py).
    """
    return _match(
        tuple(pattern.split(".")) if pattern else (),
        tuple(routing_key.split(".")) if routing_key else (),
    )


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # '#' swallows zero words, or one word and stays.
        return _match(rest, words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
