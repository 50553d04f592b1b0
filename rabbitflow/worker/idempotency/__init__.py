"""Idempotent handlers: process each message's key once, even when it is delivered twice.

`RedisStore` needs the ``redis`` extra only when it is built (redis is imported then).
"""

from rabbitflow.worker.idempotency.base import (
    DEFAULT_PREFIX,
    DEFAULT_RETENTION,
    Claim,
    IdempotencyStore,
    acquire,
)
from rabbitflow.worker.idempotency.memory import MemoryStore
from rabbitflow.worker.idempotency.redis_store import RedisStore
from rabbitflow.worker.idempotency.sqlite_store import SQLiteStore

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_RETENTION",
    "Claim",
    "IdempotencyStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "acquire",
]
