"""Testing support: run an `App` against a throwaway vhost of a real broker or an
in-memory broker, and inspect what its handlers did (see ``docs/testing.md``)."""

from rabbitflow.testing.harness import Call, DeadLetter, Harness, peek, run_app
from rabbitflow.testing.memory import MemoryBroker
from rabbitflow.testing.vhost import VirtualHost, temporary_vhost

__all__ = [
    # running an app
    "run_app",
    "Harness",
    "Call",
    "DeadLetter",
    "peek",
    # brokers
    "MemoryBroker",
    "VirtualHost",
    "temporary_vhost",
]
