"""rabbitflow: RabbitMQ topology in YAML, plain handler functions, one CLI.

Names are imported on first use (PEP 562), so that importing a pure module such as
``rabbitflow.units`` or ``rabbitflow.topology`` does not load aio-pika, the worker or the
metrics (the pytest plugin and the CLI's topology commands rely on it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rabbitflow.amqp.rpc import Replies
    from rabbitflow.app import App
    from rabbitflow.errors import (
        BodyDecodeError,
        BrokerUnavailable,
        ConfigError,
        DeclareConflict,
        DeclareFailed,
        ExchangeNotFound,
        HandlerError,
        HandlerTimeout,
        LifespanError,
        ManagementError,
        MessageTooLarge,
        PublishError,
        PublishNacked,
        PublishTimeout,
        RabbitflowError,
        RemoteError,
        RequestTimeout,
        TopologyError,
        Unroutable,
    )
    from rabbitflow.producer import Producer
    from rabbitflow.router import Router
    from rabbitflow.streams.offsets import MemoryOffsets, RedisOffsets, SQLiteOffsets
    from rabbitflow.topology import Topology, load_topology
    from rabbitflow.worker.breaker import CircuitBreaker
    from rabbitflow.worker.handler import Batch, BatchFailure, Retry
    from rabbitflow.worker.idempotency import MemoryStore, RedisStore, SQLiteStore
    from rabbitflow.worker.message import Message
    from rabbitflow.worker.outcome import Outcome, Reject

__all__ = [
    # handlers and running them
    "App",
    "Batch",
    "BatchFailure",
    "Message",
    "Outcome",
    "Producer",
    "Replies",
    "Reject",
    "Router",
    # delivery guarantees and resilience
    "CircuitBreaker",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    # streams
    "MemoryOffsets",
    "Retry",
    "RedisOffsets",
    "SQLiteOffsets",
    # topology
    "Topology",
    "load_topology",
    # errors
    "BrokerUnavailable",
    "ConfigError",
    "DeclareConflict",
    "DeclareFailed",
    "HandlerError",
    "HandlerTimeout",
    "LifespanError",
    "BodyDecodeError",
    "ExchangeNotFound",
    "ManagementError",
    "MessageTooLarge",
    "PublishError",
    "PublishNacked",
    "PublishTimeout",
    "RabbitflowError",
    "RemoteError",
    "RequestTimeout",
    "TopologyError",
    "Unroutable",
]

_ERRORS = {n for n in __all__ if n.endswith(("Error", "Unavailable", "Conflict", "Failed"))}
_ERRORS |= {"ExchangeNotFound", "HandlerTimeout", "MessageTooLarge", "PublishNacked"}
_ERRORS |= {"PublishTimeout", "RemoteError", "RequestTimeout", "Unroutable"}
_HOME = {
    "App": "rabbitflow.app",
    "Batch": "rabbitflow.worker.handler",
    "BatchFailure": "rabbitflow.worker.handler",
    "Message": "rabbitflow.worker.message",
    "Outcome": "rabbitflow.worker.outcome",
    "Producer": "rabbitflow.producer",
    "Replies": "rabbitflow.amqp.rpc",
    "Reject": "rabbitflow.worker.outcome",
    "Router": "rabbitflow.router",
    "CircuitBreaker": "rabbitflow.worker.breaker",
    "MemoryStore": "rabbitflow.worker.idempotency",
    "RedisStore": "rabbitflow.worker.idempotency",
    "SQLiteStore": "rabbitflow.worker.idempotency",
    "MemoryOffsets": "rabbitflow.streams.offsets",
    "Retry": "rabbitflow.worker.handler",
    "RedisOffsets": "rabbitflow.streams.offsets",
    "SQLiteOffsets": "rabbitflow.streams.offsets",
    "Topology": "rabbitflow.topology",
    "load_topology": "rabbitflow.topology",
    **dict.fromkeys(_ERRORS, "rabbitflow.errors"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'rabbitflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
