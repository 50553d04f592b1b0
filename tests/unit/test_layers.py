"""The layering of docs/architecture.md, held: each test fails when a forbidden import
appears (read statically from the source, and for what a bare import loads, in a fresh
interpreter)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "rabbitflow"

HEAVY = ("aio_pika", "aiormq", "pamqp", "prometheus_client", "click", "httpx", "structlog")


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module (``rabbitflow.amqp.publish``)."""
    target: str
    """The imported module, or the module a name was imported from."""
    top_level: bool
    """At module level, outside ``if TYPE_CHECKING`` (what importing the module runs)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> list[Import]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[Import] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for inner in child.body:
                    visit_one(inner, False)
                for inner in child.orelse:
                    visit_one(inner, top)
                continue
            visit_one(child, top)

    def visit_one(child: ast.AST, top: bool) -> None:
        if isinstance(child, ast.Import):
            found.extend(Import(name, a.name, top) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in child.names:
                candidate = f"{base}.{alias.name}"
                is_module = _exists(candidate)
                found.append(Import(name, candidate if is_module else base, top))
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            visit(child, False)
        else:
            visit(child, top)

    visit(tree, True)
    return found


def _exists(module: str) -> bool:
    if not module.startswith("rabbitflow"):
        return False
    rel = Path(*module.split("."))
    base = ROOT.parent / rel
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


ALL = [imp for p in sorted(ROOT.rglob("*.py")) for imp in imports_of(p)]


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


PURE = (
    "rabbitflow.errors",
    "rabbitflow.units",
    "rabbitflow.settings",
    "rabbitflow.topology",
    "rabbitflow.render",
    "rabbitflow.headers",
    "rabbitflow.worker.message",
    "rabbitflow.worker.outcome",
    "rabbitflow.worker.handler",
    "rabbitflow.worker.codec",
    "rabbitflow.codec",
)


def _outside(*packages: str) -> tuple[str, ...]:
    """Every module of rabbitflow except those of ``packages`` (exact names)."""
    names = {module_name(p) for p in ROOT.rglob("*.py")}
    return tuple(sorted(n for n in names if not _in(n, *packages)))


RULES = {
    # Production never imports the testing package (the memory transport is found
    # through the transport registry).
    "no-testing": (_outside("rabbitflow.testing"), ("rabbitflow.testing",), True),
    # amqp is below the worker, the renderers and the façade.
    "amqp-below-worker": (
        ("rabbitflow.amqp",),
        ("rabbitflow.worker", "rabbitflow.app", "rabbitflow.cli", "rabbitflow.render"),
        False,
    ),
    # Pure layers: no network, no worker runtime, no CLI.
    "pure": (
        PURE,
        (
            "aio_pika",
            "aiormq",
            "pamqp",
            "prometheus_client",
            "click",
            "httpx",
            "rabbitflow.amqp",
            "rabbitflow.worker.consumer",
            "rabbitflow.worker.runtime",
            "rabbitflow.app",
            "rabbitflow.cli",
            "rabbitflow.metrics",
        ),
        False,
    ),
    # The topology knows nothing of how it is drawn or run.
    "topology-alone": (("rabbitflow.topology",), ("rabbitflow.render", "rabbitflow.worker"), False),
    # Only the CLI imports click.
    "click-in-cli": (_outside("rabbitflow.cli"), ("click",), True),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_no_forbidden_import(rule: str) -> None:
    importers, forbidden, exact = RULES[rule]
    found = sorted(
        f"{i.module} imports {i.target}"
        for i in ALL
        if (i.module in importers if exact else _in(i.module, *importers))
        and _in(i.target, *forbidden)
    )
    assert found == []


def test_only_the_cli_and_the_package_import_the_app() -> None:
    found = [
        f"{i.module} imports {i.target}"
        for i in ALL
        if i.top_level
        and _in(i.target, "rabbitflow.app")
        and not _in(i.module, "rabbitflow.cli", "rabbitflow.testing")
    ]
    assert found == []


def test_module_level_imports_have_no_cycle() -> None:
    """The CLI's commands register without a circle of imports, and no two packages
    import each other (an import at module level, outside ``TYPE_CHECKING``)."""
    graph: dict[str, set[str]] = {}
    for i in ALL:
        if i.top_level and i.target.startswith("rabbitflow") and i.target != i.module:
            graph.setdefault(i.module, set()).add(i.target)
    cycles = _cycles(graph)
    assert cycles == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # A package importing its own submodule (its __init__) is no cycle of layers.
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        ("rabbitflow.units", HEAVY),
        ("rabbitflow.errors", HEAVY),
        ("rabbitflow.topology", HEAVY),
        ("rabbitflow.render.graph", HEAVY),
        ("rabbitflow.worker.outcome", HEAVY),
        # Loaded into every pytest run of every project that installs rabbitflow.
        ("rabbitflow.testing.plugin", (*HEAVY, "rabbitflow.worker", "rabbitflow.app")),
        ("rabbitflow", (*HEAVY, "rabbitflow.app")),
    ],
)
def test_importing_a_pure_module_loads_no_runtime(
    module: str, must_not_load: tuple[str, ...]
) -> None:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert [m for m in loaded if _in(m, *must_not_load)] == []
