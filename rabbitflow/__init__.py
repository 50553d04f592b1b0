"""rabbitflow: RabbitMQ topology in YAML, plain handler functions, one CLI."""

from rabbitflow.errors import (
    BrokerUnavailable,
    ConfigError,
    DeclareConflict,
    DeclareFailed,
    HandlerError,
    ManagementError,
    MessageTooLarge,
    PublishError,
    PublishNacked,
    PublishTimeout,
    RabbitflowError,
    RequestTimeout,
    TopologyError,
    Unroutable,
)
from rabbitflow.topology import Topology, load_topology

__all__ = [
    # topology
    "Topology",
    "load_topology",
    # errors
    "BrokerUnavailable",
    "ConfigError",
    "DeclareConflict",
    "DeclareFailed",
    "HandlerError",
    "ManagementError",
    "MessageTooLarge",
    "PublishError",
    "PublishNacked",
    "PublishTimeout",
    "RabbitflowError",
    "RequestTimeout",
    "TopologyError",
    "Unroutable",
]
