"""An in-process idempotency store: bounded, least-recently-used eviction, expiry.

It protects against redeliveries to the same worker process only; several processes or
hosts need `SQLiteStore` or `RedisStore`. A restart forgets everything.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from rabbitflow.errors import ConfigError
from rabbitflow.worker.clock import Clock, Seconds, to_seconds
from rabbitflow.worker.idempotency.base import DEFAULT_PREFIX, DEFAULT_RETENTION, Claim


@dataclass(slots=True)
class _Entry:
    done: bool
    owner: str
    expires_at: float


class MemoryStore:
    """Keys and leases in a dict of at most ``max_size`` entries.

    Args:
        max_size: entries kept; past it the least recently used one is evicted (an evicted
            DONE key can be processed again, so size it above the keys seen per retention).
        retention: how long a completed key is remembered (seconds or ``"24h"``).
        prefix: namespace in front of every key.
        clock: monotonic seconds; tests inject a fake one.
    """

    def __init__(
        self,
        max_size: int = 100_000,
        *,
        retention: Seconds = DEFAULT_RETENTION,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = time.monotonic,
    ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ConfigError(f"MemoryStore max_size must be an integer >= 1, got {max_size!r}")
        self.max_size = max_size
        self.retention = to_seconds(retention, "idempotency retention")
        self.prefix = prefix
        self._clock = clock
        self._owner = uuid.uuid4().hex
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, key: str, lease_seconds: float) -> Claim:
        """Take the lease on ``key`` unless it is done or leased; see `Claim`."""
        k, now = self.prefix + key, self._clock()
        entry = self._live(k, now)
        if entry is not None:
            return Claim.DONE if entry.done else Claim.BUSY
        self._put(k, _Entry(False, self._owner, now + lease_seconds))
        return Claim.NEW

    async def complete(self, key: str) -> bool:
        """Remember ``key`` as done; True when our lease was still live."""
        k, now = self.prefix + key, self._clock()
        entry = self._live(k, now)
        held = entry is not None and not entry.done and entry.owner == self._owner
        self._put(k, _Entry(True, self._owner, now + self.retention))
        return held

    async def release(self, key: str) -> None:
        """Drop our lease on ``key``; a completed key stays completed."""
        k = self.prefix + key
        entry = self._entries.get(k)
        if entry is not None and not entry.done and entry.owner == self._owner:
            del self._entries[k]

    def _live(self, k: str, now: float) -> _Entry | None:
        entry = self._entries.get(k)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[k]
            return None
        self._entries.move_to_end(k)
        return entry

    def _put(self, k: str, entry: _Entry) -> None:
        self._entries[k] = entry
        self._entries.move_to_end(k)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)


__all__ = ["MemoryStore"]
