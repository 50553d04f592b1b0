"""Load topology files: read, merge, check the schema and the meaning, all errors at once."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from rabbitflow.errors import Problem, TopologyError
from rabbitflow.topology.policies import Policy, check_policy
from rabbitflow.topology.schema import Exchange, ExchangeBinding, Queue, Topology
from rabbitflow.topology.source import Path, Source, read_source
from rabbitflow.topology.validate import Located, check_topology, did_you_mean

_SECTIONS: dict[str, type[BaseModel]] = {
    "exchanges": Exchange,
    "queues": Queue,
    "policies": Policy,
}
_TOP_KEYS = ("version", "exchanges", "queues", "bindings", "policies")
M = TypeVar("M", bound=BaseModel)


def load_topology(
    paths: str | FsPath | Sequence[str | FsPath] | Topology,
    *,
    environ: Mapping[str, str] | None = None,
) -> Topology:
    """Load, merge and validate topology files.

    Args:
        paths: one path, several (merged), or an already built `Topology` (returned as is).
        environ: where ``${VAR}`` is looked up; the process environment by default.

    Raises:
        TopologyError: with every problem found, each as ``FILE:LINE:COL: path: message``.
    """
    if isinstance(paths, Topology):
        return paths
    files = [paths] if isinstance(paths, str | FsPath) else list(paths)
    if not files:
        raise TopologyError([Problem("<none>", 1, 1, "", "no topology file given")])
    return load_sources([read_source(str(f), environ=environ) for f in files])


def load_text(
    text: str, file: str = "<string>", environ: Mapping[str, str] | None = None
) -> Topology:
    """Load one topology from YAML text (tests, generated files)."""
    return load_sources([read_source(file, text, environ)])


def load_sources(sources: Sequence[Source]) -> Topology:
    """Merge and validate sources already read; raise `TopologyError` on any problem."""
    problems: list[Problem] = []
    merged: dict[str, dict[str, tuple[Source, Path, Any]]] = {s: {} for s in _SECTIONS}
    raw_bindings: list[tuple[Source, Path, Any]] = []
    for source in sources:
        problems += source.problems
        if source.data is None:
            continue
        problems += _read_document(source, merged, raw_bindings)

    exchanges = _parse_section(merged["exchanges"], Exchange, problems)
    queues = _parse_section(merged["queues"], Queue, problems)
    policies = _parse_section(merged["policies"], Policy, problems)
    for name, policy in policies.items():
        problems += check_policy(name, policy)
    bindings: list[Located[ExchangeBinding]] = []
    seen: set[str] = set()
    for source, path, raw in raw_bindings:
        parsed = _parse(ExchangeBinding, raw, source, path, problems)
        if parsed is not None and _freeze(parsed) not in seen:
            seen.add(_freeze(parsed))
            bindings.append(Located(parsed, source, path))

    problems += check_topology(
        exchanges, queues, bindings, set(merged["exchanges"]), set(merged["queues"])
    )
    if problems:
        order = {s.file: i for i, s in enumerate(sources)}
        problems.sort(key=lambda p: (order.get(p.file, 0), p.line, p.column))
        raise TopologyError(_unique(problems))
    return Topology(
        exchanges={n: e.value for n, e in exchanges.items()},
        queues={n: q.value for n, q in queues.items()},
        bindings=[b.value for b in bindings],
        policies={n: p.value for n, p in policies.items()},
    )


def _read_document(
    source: Source,
    merged: dict[str, dict[str, tuple[Source, Path, Any]]],
    raw_bindings: list[tuple[Source, Path, Any]],
) -> list[Problem]:
    data = source.data
    if not isinstance(data, dict):
        return [source.problem((), "a topology file is a mapping with 'version: 1' at the top")]
    problems: list[Problem] = []
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(
                source.problem(
                    (key,), f"unknown key {key!r}" + did_you_mean(key, _TOP_KEYS), at_key=True
                )
            )
    if "version" not in data:
        problems.append(
            Problem(source.file, 1, 1, "version", "missing 'version: 1' at the top of the file")
        )
    elif data["version"] != 1 or isinstance(data["version"], bool):
        problems.append(
            source.problem(
                ("version",),
                f"unsupported version {data['version']!r}: this rabbitflow reads version: 1",
            )
        )
    for section in _SECTIONS:
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            problems.append(
                source.problem((section,), f"{section} must be a mapping of names to declarations")
            )
            continue
        for name, raw in entries.items():
            path: Path = (section, name)
            earlier = merged[section].get(name)
            if earlier is None:
                merged[section][name] = (source, path, {} if raw is None else raw)
            elif earlier[2] != ({} if raw is None else raw):
                problems.append(
                    source.problem(
                        path,
                        f"{_SECTIONS[section].__name__.lower()} {name!r} is declared "
                        f"differently in {earlier[0].file}; the same "
                        "object must be identical in every file",
                        at_key=True,
                    )
                )
    raw_list = data.get("bindings")
    if raw_list is not None:
        if isinstance(raw_list, list):
            raw_bindings += [(source, ("bindings", i), raw) for i, raw in enumerate(raw_list)]
        else:
            problems.append(
                source.problem(
                    ("bindings",), "bindings must be a list of {source, destination, routing_key}"
                )
            )
    return problems


def _parse_section(
    entries: dict[str, tuple[Source, Path, Any]], model: type[M], problems: list[Problem]
) -> dict[str, Located[M]]:
    parsed: dict[str, Located[M]] = {}
    for name, (source, path, raw) in entries.items():
        value = _parse(model, raw, source, path, problems)
        if value is not None:
            parsed[name] = Located(value, source, path)
    return parsed


def _parse(
    model: type[M], raw: Any, source: Source, path: Path, problems: list[Problem]
) -> M | None:
    if not isinstance(raw, dict):
        problems.append(
            source.problem(
                path, f"expected a mapping of {model.__name__.lower()} settings, got {_kind(raw)}"
            )
        )
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    problems += [_to_problem(error, model, raw, source, path) for error in errors]
    # Check the rest of the object's meaning anyway, so that one run reports every
    # problem: drop the fields that failed and validate what is left.
    broken = {error["loc"][0] for error in errors if error["loc"]}
    try:
        return model.model_validate({k: v for k, v in raw.items() if k not in broken})
    except ValidationError:
        return None


def _to_problem(
    error: Any, model: type[BaseModel], raw: Any, source: Source, base: Path
) -> Problem:
    loc = _clean_loc(error["loc"], raw, error["type"])
    path = (*base, *loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        return source.problem(
            path,
            f"unknown key {key!r}" + did_you_mean(key, _fields_at(model, loc[:-1])),
            at_key=True,
        )
    if kind == "missing":
        return source.problem(path[:-1], f"missing required key {loc[-1]!r}", at_key=True)
    message = str(error["msg"]).removeprefix("Value error, ")
    # pydantic's sentences start with a capital ("Input should be…"); ours do not.
    message = message.replace("Input should be", "must be", 1)
    message = message[:1].lower() + message[1:]
    hint = ""
    if kind in ("enum", "literal_error") and isinstance(error.get("input"), str):
        expected = error.get("ctx", {}).get("expected", "")
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",")]
        hint = did_you_mean(error["input"], [o for o in options if o])
    if hint:
        message += hint
    elif (
        not message.startswith("invalid")
        and "input" in error
        and not isinstance(error["input"], dict | list)
    ):
        message += f" (got {error['input']!r})"
    return source.problem(path, message)


def _clean_loc(loc: tuple[Any, ...], raw: Any, kind: str) -> tuple[str | int, ...]:
    """Keep the parts of pydantic's location that are keys of the document.

    Pydantic inserts union members and validator names (``DeadLetterTarget``,
    ``function-after[...]``) between real keys; they mean nothing to a user.
    """
    out: list[str | int] = []
    node = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]
        elif last and kind in ("missing", "extra_forbidden"):
            out.append(part)
    return tuple(out)


def _fields_at(model: type[BaseModel], loc: Iterable[str | int]) -> list[str]:
    """Field names of the model found by following ``loc`` from ``model`` (for hints)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field else None
    return list(current.model_fields) if current else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None


def _kind(value: Any) -> str:
    return {
        type(None): "nothing",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: f"the string {value!r}",
        list: "a list",
    }.get(type(value), type(value).__name__)


def _freeze(binding: ExchangeBinding) -> str:
    return binding.model_dump_json()


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, int, int, str, str]] = set()
    out = []
    for p in problems:
        key = (p.file, p.line, p.column, p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
