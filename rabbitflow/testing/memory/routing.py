"""How each exchange type matches a message against a binding, as RabbitMQ does it.

Pure functions: the in-memory broker asks them which bindings a message takes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from rabbitflow.topology.matching import topic_matches

__all__ = ["direct_matches", "hash_pick", "headers_match", "topic_matches"]


def headers_match(binding: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """Whether a headers-exchange binding matches a message's headers.

    ``x-match`` is ``all`` (the default) or ``any``; ``all-with-x`` / ``any-with-x`` also
    compare ``x-`` keys, which are otherwise ignored. A binding value of ``None`` (AMQP
    void) only asks for the key to be present. A binding without any key to compare
    matches every message under ``all`` and none under ``any``.
    """
    mode = str(binding.get("x-match", "all"))
    with_x = mode.endswith("-with-x")
    wanted = {
        k: v for k, v in binding.items() if k != "x-match" and (with_x or not k.startswith("x-"))
    }
    have = headers or {}
    hits = [k in have and (v is None or _same(have[k], v)) for k, v in wanted.items()]
    if mode.startswith("any"):
        return any(hits)
    return all(hits)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bytes) and isinstance(b, str):
        return a == b.encode()
    if isinstance(b, bytes) and isinstance(a, str):
        return a.encode() == b
    return bool(a == b)


def direct_matches(binding_key: str, routing_key: str) -> bool:
    """Direct exchanges compare the whole key."""
    return binding_key == routing_key


def hash_pick(destinations: Sequence[tuple[str, int]], key: str) -> str | None:
    """The destination of a consistent-hash exchange for ``key``.

    Like the plugin since RabbitMQ 3.8, each binding owns ``weight`` buckets, in binding
    order, and a key goes to bucket ``hash(key) mod buckets``. The hash function differs
    (the plugin uses ``erlang:phash2``): one key always reaches one queue, keys spread by
    weight, but which queue a given key reaches is not the one RabbitMQ picks.
    """
    buckets = [name for name, weight in destinations for _ in range(max(weight, 0))]
    if not buckets:
        return None
    return buckets[_hash(key) % len(buckets)]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")
