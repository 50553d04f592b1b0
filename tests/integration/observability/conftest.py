"""Fixtures of the observability tests: the ``rabbitflow run`` subprocess of the worker
tests."""

from tests.integration.worker.procs import worker  # noqa: F401
