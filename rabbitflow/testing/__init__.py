"""Testing support: run an `App` against a throwaway vhost of a real broker or an
in-memory broker, and inspect what its handlers did (see ``docs/testing.md``).

Names are imported on first use, so that ``rabbitflow.testing.memory`` (which
``connect("memory://...")`` loads) does not pull in the harness and the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    "run_app": "harness",
    "Harness": "harness",
    "Call": "harness",
    "DeadLetter": "harness",
    "peek": "harness",
    "MemoryBroker": "memory",
    "VirtualHost": "vhost",
    "temporary_vhost": "vhost",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'rabbitflow.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rabbitflow.testing.{_HOME[name]}"), name)
