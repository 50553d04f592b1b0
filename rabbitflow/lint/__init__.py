"""``rabbitflow lint``: designs that validate but hurt in production (DESIGN.md §10)."""

from rabbitflow.lint.findings import Finding, Hit, Locator, Severity, exit_code, load_located
from rabbitflow.lint.rules import RULES, Rule, lint_topology

__all__ = [
    "RULES",
    "Finding",
    "Hit",
    "Locator",
    "Rule",
    "Severity",
    "exit_code",
    "lint_topology",
    "load_located",
]
