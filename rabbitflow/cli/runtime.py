"""Commands: runtime."""

from __future__ import annotations

from rabbitflow.cli.main import main  # noqa: F401
