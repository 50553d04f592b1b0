"""What a lint rule reports, where it points, and how a finding is printed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from rabbitflow.errors import Problem, TopologyError
from rabbitflow.topology.loader import load_sources
from rabbitflow.topology.schema import ExchangeBinding, Topology
from rabbitflow.topology.source import Path, Source, read_source


class Severity(StrEnum):
    """How much a finding matters; ``error`` makes ``rabbitflow lint`` exit 1."""

    ERROR = "error"
    """Messages are lost or a declare fails: fix before deploying."""
    WARNING = "warning"
    """Messages may be lost, or an upgrade will refuse the design; exit 1 under --strict."""
    INFO = "info"
    """Harmless but misleading; never changes the exit code."""


@dataclass(frozen=True)
class Hit:
    """A rule's raw finding: the key it is about (from the document root) and the text."""

    path: Path
    message: str
    hint: str


@dataclass(frozen=True)
class Finding:
    """One located finding: ``FILE:LINE:COL: RFnnn severity: message (hint)``."""

    file: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    hint: str

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.rule} {self.severity.value}: "
        text += self.message
        return f"{text} ({self.hint})" if self.hint else text

    def as_json(self) -> str:
        """One JSON object with the keys DESIGN.md §10 names."""
        return json.dumps(
            {
                "file": self.file,
                "line": self.line,
                "column": self.column,
                "rule": self.rule,
                "severity": self.severity.value,
                "message": self.message,
                "hint": self.hint,
            }
        )


class Locator:
    """Turns a path such as ``("queues", "orders", "retry")`` into file, line and column.

    The files were merged: an exchange or queue is found in the first file that declares
    it, an exchange-to-exchange binding in the first file whose ``bindings`` list holds an
    entry equal to it. A path the files do not hold (a broker-only object) points at the
    first line of the first file.
    """

    def __init__(self, sources: Sequence[Source], topology: Topology | None = None) -> None:
        self.sources = list(sources)
        self._bindings = _binding_places(self.sources, topology)

    def locate(self, path: Path) -> tuple[str, int, int]:
        """``(file, line, column)`` of the key at ``path`` (or its nearest parent)."""
        source, path = self._find(path)
        if source is None:
            first = self.sources[0].file if self.sources else "<none>"
            return first, 1, 1
        probe = path
        while probe:
            # A key where there is one; a list item (no key) by where its value starts.
            mark = source.key_marks.get(probe) or source.value_marks.get(probe)
            if mark is not None:
                return source.file, mark[0], mark[1]
            probe = probe[:-1]
        return source.file, 1, 1

    def _find(self, path: Path) -> tuple[Source | None, Path]:
        if not path:
            return (self.sources[0] if self.sources else None), path
        for source in self.sources:
            data = source.data if isinstance(source.data, dict) else {}
            section = data.get(path[0])
            if len(path) >= 2 and isinstance(section, dict) and path[1] in section:
                return source, path
        if path[0] == "bindings" and len(path) >= 2 and path[1] in self._bindings:
            source, place = self._bindings[int(path[1])]
            return source, (*place, *path[2:])
        return None, path

    def finding(self, rule: str, severity: Severity, hit: Hit) -> Finding:
        """The located `Finding` of a rule's `Hit`."""
        file, line, column = self.locate(hit.path)
        return Finding(file, line, column, rule, severity, hit.message, hit.hint)


def _binding_places(
    sources: Sequence[Source], topology: Topology | None
) -> dict[int, tuple[Source, Path]]:
    """Merged exchange-binding index → the file and path that first wrote it."""
    if topology is None:
        return {}
    places: dict[int, tuple[Source, Path]] = {}
    for source in sources:
        data = source.data if isinstance(source.data, dict) else {}
        raw = data.get("bindings")
        for i, entry in enumerate(raw if isinstance(raw, list) else []):
            try:
                parsed = ExchangeBinding.model_validate(entry)
            except ValidationError:
                continue
            for j, binding in enumerate(topology.bindings):
                if binding == parsed and j not in places:
                    places[j] = (source, ("bindings", i))
    return places


def load_located(files: Sequence[str]) -> tuple[Topology, Locator]:
    """Load and validate topology files, keeping where each key was written.

    Raises:
        TopologyError: the files do not validate (lint checks valid topologies only).
    """
    if not files:
        raise TopologyError([Problem("<none>", 1, 1, "", "no topology file given")])
    sources = [read_source(str(f)) for f in files]
    topology = load_sources(sources)
    return topology, Locator(sources, topology)


def exit_code(findings: Sequence[Finding], *, strict: bool) -> int:
    """1 when a finding is an error (or a warning under ``strict``), else 0."""
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    return 1 if any(f.severity in failing for f in findings) else 0
