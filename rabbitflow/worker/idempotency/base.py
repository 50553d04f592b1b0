"""The idempotency store contract: claim a key with a lease, complete it, or release it.

RabbitMQ delivers at least once, so a handler can see the same message twice: after a
redelivery (worker killed before its ack) or a duplicate publish. An idempotency store
turns "at least once" into "the handler's effect once" for handlers that succeed:

1. ``claim(key, lease)`` before running the handler. `Claim.NEW`: this worker now holds
   a lease on the key and runs the handler. `Claim.DONE`: the key was processed
   successfully before; skip the handler and ack. `Claim.BUSY`: another worker holds a
   live lease; wait for it (`acquire` does) rather than running the handler twice.
2. ``complete(key)`` after the handler succeeded and before the ack: the key is kept as
   DONE for the store's retention (24 h by default).
3. ``release(key)`` after a failure: the lease is dropped so the retry can run.

A lease that is neither completed nor released (the worker died) expires after
``lease_seconds`` and the key can be claimed again: choose a lease longer than the
handler's timeout.
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from typing import Protocol, runtime_checkable

from rabbitflow.errors import LeaseBusy

DEFAULT_RETENTION = 24 * 3600.0
"""Seconds a completed key is remembered by default."""
DEFAULT_PREFIX = "rabbitflow:idem:"
"""Namespace put in front of every key, so stores can share a database."""


class Claim(Enum):
    """The answer to a claim on an idempotency key."""

    NEW = "new"
    """This worker holds the lease now: run the handler, then complete or release."""
    DONE = "done"
    """Already processed successfully: skip the handler and ack the message."""
    BUSY = "busy"
    """Another worker holds a live lease: wait, or retry the message later."""


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where processed keys and live leases are kept.

    Implementations: `MemoryStore` (one process), `SQLiteStore` (processes of one host),
    `RedisStore` (many hosts).
    """

    async def claim(self, key: str, lease_seconds: float) -> Claim:
        """Try to take the lease on ``key`` for ``lease_seconds``; see `Claim`."""
        ...

    async def complete(self, key: str) -> bool:
        """Record ``key`` as processed successfully, for the store's retention.

        Returns:
            True when this store still held the lease; False when the lease had expired
            (or was never taken), in which case another worker may have run the handler
            too. The key is recorded as done either way: the effect has happened.
        """
        ...

    async def release(self, key: str) -> None:
        """Drop this store's lease on ``key`` after a failure, so a retry can run.

        A lease held by someone else (ours expired and was claimed again) is left alone.
        """
        ...


async def acquire(
    store: IdempotencyStore,
    key: str,
    *,
    lease: float = 60.0,
    poll_interval: float = 0.1,
    max_wait: float = 30.0,
) -> bool:
    """Claim ``key``, waiting while another worker holds it, and say whether to process.

    Args:
        store: the idempotency store.
        key: the message's idempotency key (its ``message_id`` by default).
        lease: seconds the lease lasts; longer than the handler may run.
        poll_interval: seconds between claims while the key is BUSY.
        max_wait: seconds to wait for a BUSY key before giving up.

    Returns:
        True to run the handler (this worker holds the lease: complete or release it);
        False to skip it and ack (the key was already processed successfully).

    Raises:
        LeaseBusy: when the key is still BUSY after ``max_wait``. The message must then be
            retried (not acked, not skipped): the other worker may yet fail.
    """
    started = time.monotonic()
    while True:
        claim = await store.claim(key, lease)
        if claim is Claim.NEW:
            return True
        if claim is Claim.DONE:
            return False
        waited = time.monotonic() - started
        if waited >= max_wait:
            raise LeaseBusy(key, waited)
        await asyncio.sleep(min(poll_interval, max_wait - waited))


__all__ = ["DEFAULT_PREFIX", "DEFAULT_RETENTION", "Claim", "IdempotencyStore", "acquire"]
