"""rabbitflow: RabbitMQ topology in YAML, plain handler functions, one CLI."""

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
from rabbitflow.streams.offsets import MemoryOffsets, RedisOffsets, SQLiteOffsets
from rabbitflow.topology import Topology, load_topology
from rabbitflow.worker.breaker import CircuitBreaker
from rabbitflow.worker.idempotency import MemoryStore, RedisStore, SQLiteStore
from rabbitflow.worker.message import Message
from rabbitflow.worker.outcome import Reject

__all__ = [
    # handlers and running them
    "App",
    "Message",
    "Producer",
    "Replies",
    "Reject",
    # delivery guarantees and resilience
    "CircuitBreaker",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    # streams
    "MemoryOffsets",
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
