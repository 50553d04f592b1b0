"""Fixtures of the worker tests."""

from tests.integration.worker.procs import worker

__all__ = ["worker"]
