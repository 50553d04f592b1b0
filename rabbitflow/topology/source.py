"""Read YAML safely into plain values, remembering where every key and value stands.

PyYAML's composer builds a node graph without constructing anything; we walk it ourselves
so that only the plain YAML types exist (no tag can construct a Python object), aliases
cannot expand without bound, and every value keeps its line and column for error messages.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from rabbitflow.errors import Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Topology files larger than this are refused before parsing."""
MAX_NODES = 200_000
"""Nodes visited while reading one file, aliases counted each time they expand."""
MAX_DEPTH = 64

Path = tuple[str | int, ...]
"""Keys from the document root: ``("queues", "orders", "bind", 0, "exchange")``."""

_ALLOWED_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:merge",
}
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(path: Path) -> str:
    """Write a path as users read it: ``queues.orders.bind[0].exchange``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Source:
    """One YAML file read into plain data, with the position of each key and value."""

    file: str
    data: Any = None
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    value_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: Path, message: str, *, at_key: bool = False) -> Problem:
        """Build a problem located at ``path`` (its key, or its value), or the nearest parent."""
        marks = self.key_marks if at_key else self.value_marks
        probe = path
        while probe and probe not in marks and probe not in self.key_marks:
            probe = probe[:-1]
        line, col = marks.get(probe) or self.key_marks.get(probe) or (1, 1)
        return Problem(self.file, line, col, format_path(path), message)


class _Reader:
    def __init__(self, source: Source, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.nodes = 0
        self.loader = yaml.SafeLoader("")

    def fail(self, node: yaml.Node, path: Path, message: str) -> None:
        mark = node.start_mark
        self.source.problems.append(
            Problem(self.source.file, mark.line + 1, mark.column + 1, format_path(path), message)
        )

    def read(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(node)
        if depth > MAX_DEPTH:
            raise _TooDeep(node)
        mark = node.start_mark
        self.source.value_marks.setdefault(path, (mark.line + 1, mark.column + 1))
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.fail(node, path, f"tag {tag} is not allowed in topology files")
            return None
        if isinstance(node, yaml.MappingNode):
            return self.read_mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self.read_scalar(node, path)

    def read_scalar(self, node: yaml.Node, path: Path) -> Any:
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # keep dates as written; no field of ours is a date
        if "${" in node.value:
            failed = len(self.source.problems)
            expanded = self.expand(node, path)
            plain = not node.style  # None from PyYAML, "" from libyaml
            if plain and not expanded.strip():
                # A plain scalar that expands to nothing would be read as null: the
                # field would silently fall back to its default (max_length dropped).
                if len(self.source.problems) == failed:
                    self.fail(
                        node,
                        path,
                        f"{node.value} expands to an empty value; set the variable, give a "
                        "default, or quote it for an empty string",
                    )
                return None
            if plain:  # a plain scalar is typed after expansion: ${N} → int
                # PyYAML's resolver is untyped.
                tag = self.loader.resolve(  # type: ignore[no-untyped-call]
                    yaml.ScalarNode, expanded, (True, False)
                )
                if tag in _ALLOWED_TAGS and tag != "tag:yaml.org,2002:timestamp":
                    return self.loader.construct_object(yaml.ScalarNode(tag, expanded))
            return expanded
        return self.loader.construct_object(node)

    def expand(self, node: yaml.Node, path: Path) -> str:
        """Expand ``${VAR}`` and ``${VAR:-default}``; a default may itself hold
        references (``${A:-${B:-x}}``). A malformed reference is an error, never kept as
        text: it would become a literal name."""
        text = str(node.value)
        try:
            value, end = self._expand_until(text, 0, node, path, nested=False)
        except _BadReference as exc:
            self.fail(node, path, str(exc))
            return ""
        assert end == len(text)
        return value

    def _expand_until(
        self, text: str, start: int, node: yaml.Node, path: Path, *, nested: bool
    ) -> tuple[str, int]:
        """Expand from ``start`` to the end of ``text`` or, when ``nested``, to the ``}``
        closing a default; return the text and the index after it."""
        out: list[str] = []
        i = start
        while i < len(text):
            if nested and text[i] == "}":
                return "".join(out), i + 1
            if text.startswith("${", i):
                value, i = self._reference(text, i, node, path)
                out.append(value)
                continue
            out.append(text[i])
            i += 1
        if nested:
            raise _BadReference(f"unterminated ${{...}} in {text!r}: a '}}' is missing")
        return "".join(out), i

    def _reference(self, text: str, start: int, node: yaml.Node, path: Path) -> tuple[str, int]:
        m = _VAR_NAME.match(text, start + 2)
        if m is None:
            raise _BadReference(
                f"invalid variable reference in {text!r}: write ${{NAME}} or "
                "${NAME:-default} (NAME: letters, digits, _)"
            )
        name, i = m.group(), m.end()
        default: str | None = None
        if text.startswith(":-", i):
            default, i = self._expand_until(text, i + 2, node, path, nested=True)
        elif text.startswith("}", i):
            i += 1
        else:
            raise _BadReference(
                f"invalid variable reference in {text!r}: after ${{{name} comes '}}' "
                "or ':-default}'"
            )
        value = self.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                self.fail(
                    node,
                    path,
                    f"environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}})",
                )
                return "", i
            return default, i
        return value, i

    def read_mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged.update(self.read_merge(value_node, path, depth))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "keys must be plain strings")
                continue
            if key_node.tag not in _ALLOWED_TAGS:
                tag = key_node.tag.replace("tag:yaml.org,2002:", "!!")
                self.fail(key_node, path, f"tag {tag} is not allowed in topology files")
                continue
            reported = len(self.source.problems)
            key = self.read_scalar(key_node, path)
            if key is None and len(self.source.problems) > reported:
                continue  # a bad ${...} in the key, reported already
            if key is None or isinstance(key, bool | float):
                self.fail(key_node, path, f"key {key_node.value!r} must be a string")
                continue
            key = str(key)
            child = (*path, key)
            if key in result:
                self.fail(
                    key_node,
                    child,
                    f"duplicate key {key!r} (first at line {self.source.key_marks[child][0]})",
                )
                continue
            self.source.key_marks[child] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.read(value_node, child, depth + 1)
        return {**merged, **result}

    def read_merge(self, node: yaml.Node, path: Path, depth: int) -> dict[Any, Any]:
        values = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[Any, Any] = {}
        for item in reversed(values):
            value = self.read(item, path, depth + 1)
            if not isinstance(value, dict):
                self.fail(item, path, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            merged.update(value)
        return merged


class _BadReference(Exception):
    """A ``${`` that does not start a well-formed reference."""


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _TooDeep(_TooLarge):
    pass


_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)
"""libyaml's parser, when PyYAML was built with it: the same events and nodes, about ten
times faster than the pure-Python one."""


def _compose(text: str) -> yaml.Node | tuple[int, int] | None:
    """The document's node graph, or where it nests too deeply.

    With libyaml the document is parsed by it; a document libyaml refuses is parsed again
    by the pure-Python parser, whose messages (and positions) are the ones reported.

    Raises:
        yaml.YAMLError: for a syntax error.
    """
    loaders: list[Any] = [yaml.SafeLoader] if _FAST_LOADER is None else [_FAST_LOADER]
    if _FAST_LOADER is not None:
        loaders.append(yaml.SafeLoader)
    for loader in loaders:
        try:
            too_deep = _too_deep(text, loader)
            if too_deep is not None:
                return too_deep
            node: yaml.Node | None = yaml.compose(text, Loader=loader)
            return node
        except yaml.YAMLError:
            if loader is yaml.SafeLoader:
                raise
    raise AssertionError("unreachable: the last loader raises or returns")


def _too_deep(text: str, loader: Any = yaml.SafeLoader) -> tuple[int, int] | None:
    """Where (line, column, from 1) nesting first exceeds `MAX_DEPTH`, from parser events.

    PyYAML's composer recurses once per level, so a document of ten thousand ``[`` would
    exhaust Python's stack before our own reader could count; the event parser does not
    recurse.
    """
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            mark = event.start_mark
            if depth > MAX_DEPTH and mark is not None:
                return mark.line + 1, mark.column + 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values reading ``node`` visits at most, aliases expanded, in time linear in
    the document (each node counted once, by identity). An upper bound: the reader also
    skips some entries (bad keys)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge" and isinstance(value, yaml.SequenceNode):
                size += sum(_expanded_size(item, memo) for item in value.value)
            else:
                size += _expanded_size(value, memo)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, memo) for item in node.value)
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def _find_overflow(node: yaml.Node, count: list[int], depth: int) -> None:
    """Visit values in the reader's order, counting only, and raise `_TooLarge` at the
    node where the reader would: an alias bomb is refused in a fraction of the time the
    full reader takes to reach its limit. Returns quietly when the document nests too deeply
    first (`_TooDeep`) or the bound was not reached (the reader then reports it)."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _TooLarge(node)
    if depth > MAX_DEPTH:
        raise _TooDeep(node)
    if node.tag not in _ALLOWED_TAGS:
        return
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                items = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for item in reversed(items):
                    _find_overflow(item, count, depth + 1)
            elif isinstance(key, yaml.ScalarNode) and key.tag in _ALLOWED_TAGS:
                _find_overflow(value, count, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _find_overflow(item, count, depth + 1)


def read_source(
    file: str, text: str | None = None, environ: Mapping[str, str] | None = None
) -> Source:
    """Read one YAML file (or ``text`` standing for it) into a `Source`.

    Problems (unreadable file, syntax error, forbidden tag, size, unset variable) are
    collected on the result rather than raised; ``data`` is None when nothing could be read.
    """
    source = Source(file)
    if text is None:
        try:
            size = os.path.getsize(file)
            if size > MAX_FILE_BYTES:
                source.problems.append(
                    Problem(
                        file,
                        1,
                        1,
                        "",
                        f"file is {size} bytes; topology "
                        f"files are limited to {MAX_FILE_BYTES} bytes",
                    )
                )
                return source
            with open(file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            source.problems.append(Problem(file, 1, 1, "", f"cannot read file: {reason}"))
            return source
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        source.problems.append(
            Problem(file, 1, 1, "", f"topology files are limited to {MAX_FILE_BYTES} bytes")
        )
        return source
    try:
        node = _compose(text)
        if isinstance(node, tuple):
            source.problems.append(
                Problem(
                    file,
                    *node,
                    "",
                    f"document refused: nested more than {MAX_DEPTH} levels deep",
                )
            )
            return source
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = ": ".join(str(part) for part in (exc.context, exc.problem) if part)
        source.problems.append(Problem(file, line, col, "", f"YAML syntax error: {message}"))
        return source
    except yaml.YAMLError as exc:
        source.problems.append(Problem(file, 1, 1, "", f"YAML error: {exc}"))
        return source
    if node is None:
        source.problems.append(
            Problem(file, 1, 1, "", "file is empty: a topology starts with 'version: 1'")
        )
        return source
    reader = _Reader(source, os.environ if environ is None else environ)
    try:
        if _expanded_size(node, {}) > MAX_NODES:
            with contextlib.suppress(_TooDeep):  # the reader reports nesting itself
                _find_overflow(node, [0], 0)  # raises where the reader would, quickly
        source.data = reader.read(node, ())
    except _TooLarge as exc:
        mark = exc.node.start_mark
        what = (
            "nested too deeply"
            if isinstance(exc, _TooDeep)
            else f"more than {MAX_NODES} values (an alias bomb?)"
        )
        source.problems.append(
            Problem(file, mark.line + 1, mark.column + 1, "", f"document refused: {what}")
        )
        source.data = None
    return source
