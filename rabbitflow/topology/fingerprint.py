"""A short fingerprint of a queue's definition (durability and arguments).

Workers put it in their consumer tags (``rabbitflow.<fingerprint>.<random>``), so that
``rabbitflow migrate`` can tell, from the broker's list of a queue's consumers, which are
rabbitflow workers and whether they run the queue's old definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

CONSUMER_TAG_PREFIX = "rabbitflow."
"""Every rabbitflow worker's consumer tag starts with this."""


def fingerprint(durable: bool, arguments: Mapping[str, Any]) -> str:
    """12 hex digits naming a queue definition; classic's ``x-queue-type`` is ignored."""
    args = dict(arguments)
    if args.get("x-queue-type") == "classic":
        del args["x-queue-type"]
    text = json.dumps({"durable": durable, "arguments": args}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def consumer_tag(definition: str, unique: str) -> str:
    """``rabbitflow.<fingerprint>.<unique>``."""
    return f"{CONSUMER_TAG_PREFIX}{definition}.{unique}"


def tag_fingerprint(tag: str) -> str | None:
    """The fingerprint in a rabbitflow consumer tag; None for another client's tag."""
    if not tag.startswith(CONSUMER_TAG_PREFIX):
        return None
    parts = tag.split(".")
    return parts[1] if len(parts) >= 3 else None
