"""Property: whatever a document turns into, the loader returns a Topology or raises
TopologyError -- never another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabbitflow.errors import TopologyError
from rabbitflow.topology import Topology, load_text

TOPOLOGIES = Path(__file__).parents[3] / "topologies"
DOCUMENTS = [yaml.safe_load(p.read_text()) for p in sorted(TOPOLOGIES.glob("*.yaml"))]
TEXTS = [p.read_text() for p in sorted(TOPOLOGIES.glob("*.yaml"))]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "1s",
            "0ms",
            "-5s",
            "1GiB",
            "quorum",
            "stream",
            "headers",
            "any",
            "${X}",
            "${X:-3}",
            "amq.topic",
            "",
            "#",
            "orders",
            "x-consistent-hash",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _paths(child, (*prefix, i))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "rename", "add"]))
        key = path[-1]
        if action == "replace":
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = parent.pop(key)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(values)
    return doc


def _load(text: str) -> None:
    problems: tuple[object, ...] = ()
    try:
        result = load_text(text, environ={"X": "7"})
    except TopologyError as exc:
        problems = exc.problems
    else:
        assert isinstance(result, Topology)
        return
    assert problems
    assert all(str(p).startswith("<string>:") for p in problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_mutated_documents_load_or_raise_topology_error(doc: Any) -> None:
    _load(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TEXTS), st.data())
def test_mutated_text_loads_or_raises_topology_error(text: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    cut = data.draw(st.integers(min_value=0, max_value=20))
    insert = data.draw(st.text(alphabet=":-[]{}&*!|>'\"#%@`, \n\t$", max_size=6))
    _load(text[:at] + insert + text[at + cut :])
