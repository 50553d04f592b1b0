"""Graph output, compared with snapshots in tests/data/graphs/.

To accept a deliberate change: ``RABBITFLOW_UPDATE_SNAPSHOTS=1 pytest tests/unit/render``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rabbitflow.render.graph import Format, build_graph, render, to_mermaid
from rabbitflow.topology import load_text, load_topology
from rabbitflow.topology.expand import expand

ROOT = Path(__file__).parents[3]
SNAPSHOTS = ROOT / "tests" / "data" / "graphs"
EXAMPLES = ["orders", "media", "rpc"]


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_topology_matches_its_snapshot(name: str, fmt: Format) -> None:
    drawn = render(expand(load_topology(ROOT / "topologies" / f"{name}.yaml")), fmt)
    snapshot = SNAPSHOTS / f"{name}.{'mmd' if fmt is Format.MERMAID else 'dot'}"
    if os.environ.get("RABBITFLOW_UPDATE_SNAPSHOTS"):
        snapshot.write_text(drawn, encoding="utf-8")
    assert drawn == snapshot.read_text(encoding="utf-8")


def test_retry_path_goes_to_the_delay_queue_and_back_dashed() -> None:
    text = "version: 1\nqueues:\n  q:\n    retry: {max_retries: 1, delay: 2s}\n"
    graph = build_graph(expand(load_text(text)))
    ids = {n.label: n.id for n in graph.nodes}
    edges = {(e.source, e.target): e for e in graph.edges}
    out = edges[ids["q"], ids["q.retry.2s"]]
    back = edges[ids["q.retry.2s"], ids["q"]]
    assert (out.label, out.dashed) == ("retry 2s", True)
    assert (back.label, back.dashed) == ("after TTL", True)


def test_dead_letter_path_goes_through_dlx_to_dlq() -> None:
    graph = build_graph(expand(load_text("version: 1\nqueues:\n  q: {dead_letter: true}\n")))
    ids = {n.label.split(" ")[0]: n.id for n in graph.nodes}
    pairs = {(e.source, e.target) for e in graph.edges if e.dashed}
    assert (ids["q"], ids["q.dlx"]) in pairs
    assert (ids["q.dlx"], ids["q.dlq"]) in pairs


def test_headers_binding_is_labelled_with_its_match() -> None:
    text = (
        "version: 1\nexchanges:\n  m: {type: headers}\nqueues:\n  q:\n"
        "    bind: [{exchange: m, match: any, headers: {format: mp4, size: big}}]\n"
    )
    (edge,) = build_graph(expand(load_text(text))).edges
    assert edge.label == "any: format=mp4, size=big"


def test_builtin_exchange_gets_a_node_of_its_own() -> None:
    text = "version: 1\nqueues:\n  q: {bind: [{exchange: amq.topic, routing_key: a.#}]}\n"
    out = to_mermaid(build_graph(expand(load_text(text))))
    assert '{{"amq.topic"}}' in out
    assert '-->|"a.#35;"|' in out  # '#' written as an entity, as Mermaid reads it
