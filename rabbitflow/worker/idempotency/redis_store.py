"""An idempotency store in Redis, shared by workers on many hosts (the ``redis`` extra).

A key's value is ``lease:<owner>`` while a worker holds it (with the lease as its TTL) or
``done`` once processed (with the retention as its TTL). The claim is Redis's atomic
``SET key value NX PX lease``; complete and release are Lua scripts, so that checking the
owner and changing the key happen as one step on the server.

Redis persistence decides what survives a Redis restart: without AOF (``appendfsync
everysec`` or better) recently completed keys can be forgotten, and a redelivered message
then runs again. Against a Redis replica failover the same holds (replication is async).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from rabbitflow.errors import ConfigError
from rabbitflow.worker.clock import Seconds, to_seconds
from rabbitflow.worker.idempotency.base import DEFAULT_PREFIX, DEFAULT_RETENTION, Claim

if TYPE_CHECKING:
    from redis.asyncio import Redis

_DONE = "done"

# KEYS[1] = key, ARGV[1] = our lease value, ARGV[2] = retention in ms.
# Returns 1 when we still held the lease. Records done in every case: the effect happened.
_COMPLETE = """
local held = redis.call('GET', KEYS[1]) == ARGV[1]
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
if held then return 1 else return 0 end
"""

# KEYS[1] = key, ARGV[1] = our lease value. Deletes the key only while we hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """Keys and leases in Redis.

    Args:
        client: a `redis.asyncio.Redis` client; or give ``url`` instead.
        url: a Redis URL (``redis://127.0.0.1:6379/0``) to build a client from; the store
            then owns that client and closes it in `close()`.
        retention: how long a completed key is remembered (seconds or ``"24h"``).
        prefix: namespace in front of every key.

    Raises:
        ConfigError: without a client or URL, or when the ``redis`` extra is missing.
    """

    def __init__(
        self,
        client: Redis | None = None,
        *,
        url: str | None = None,
        retention: Seconds = DEFAULT_RETENTION,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigError("RedisStore needs either a redis client or url=, not both")
        if client is None:
            client = redis_from_url(str(url), "RedisStore")
        self._owns_client = url is not None
        self.client = client
        self.retention = to_seconds(retention, "idempotency retention")
        self.prefix = prefix
        self._lease = f"lease:{uuid.uuid4().hex}"
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client when the store created it from a URL."""
        if self._owns_client:
            await self.client.aclose()

    async def claim(self, key: str, lease_seconds: float) -> Claim:
        """Take the lease on ``key`` unless it is done or leased; see `Claim`."""
        k, px = self.prefix + key, _ms(lease_seconds)
        while True:
            if await self.client.set(k, self._lease, nx=True, px=px):
                return Claim.NEW
            value = await self.client.get(k)
            if value is not None:
                return Claim.DONE if _text(value) == _DONE else Claim.BUSY
            # The key expired between SET and GET: try to take it again.

    async def complete(self, key: str) -> bool:
        """Remember ``key`` as done; True when our lease was still live."""
        held = await self._complete(
            keys=[self.prefix + key], args=[self._lease, _ms(self.retention)]
        )
        return bool(held)

    async def release(self, key: str) -> None:
        """Drop our lease on ``key``; a completed key stays completed."""
        await self._release(keys=[self.prefix + key], args=[self._lease])


def redis_from_url(url: str, who: str) -> Redis:
    """A client for ``url``; shared with the stream offset store.

    Raises:
        ConfigError: when the ``redis`` extra is missing.
    """
    try:
        from redis.asyncio import Redis
    except ImportError:
        raise ConfigError(
            f"{who} needs the redis package: pip install 'rabbitflow[redis]'"
        ) from None
    return Redis.from_url(url)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["RedisStore"]
