"""Draw expanded declarations as a Mermaid flowchart or a Graphviz dot digraph.

Exchanges are hexagons (Mermaid) or boxes (dot), queues are cylinders. Solid edges are
bindings, labelled with their routing key or header match; dashed edges are the paths the
broker or rabbitflow takes on failure: a retry goes ``Q → Q.retry.<d>`` and comes back to
``Q`` when the TTL expires, a dead letter goes ``Q → Q.dlx → Q.dlq``, and what an
exchange cannot route goes to its alternate exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from rabbitflow.topology.expand import BindingDecl, Declarations, QueueDecl, Role
from rabbitflow.units import format_duration

NodeId = Callable[[str, str], str]
"""Looks up (or adds) the node of (kind, name) and returns its id."""


class Format(StrEnum):
    """Output formats of `render`."""

    MERMAID = "mermaid"
    """A Mermaid ``flowchart LR``: renders in GitHub and GitLab Markdown."""
    DOT = "dot"
    """Graphviz: ``dot -Tsvg`` draws it."""


@dataclass(frozen=True)
class Node:
    """An exchange or a queue in the drawing."""

    id: str
    label: str
    kind: str
    """``exchange`` or ``queue``."""
    role: Role


@dataclass(frozen=True)
class Edge:
    """An arrow between two nodes; dashed for retry and dead-letter paths."""

    source: str
    target: str
    label: str
    dashed: bool = False


@dataclass(frozen=True)
class Graph:
    """Nodes and edges, independent of the output format."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def build_graph(decls: Declarations) -> Graph:
    """The nodes and edges that stand for a topology's declarations."""
    ids: dict[tuple[str, str], str] = {}
    nodes: list[Node] = []
    for ex in decls.exchanges:
        ids["exchange", ex.name] = f"x{len(ids)}"
        label = f"{ex.name or '(default)'} ({ex.type})"
        nodes.append(Node(ids["exchange", ex.name], label, "exchange", ex.role))
    for q in decls.queues:
        ids["queue", q.name] = f"q{len(ids)}"
        nodes.append(Node(ids["queue", q.name], _queue_label(q), "queue", q.role))

    def node_id(kind: str, name: str) -> str:
        # Built-in exchanges (amq.*) and shared dead-letter targets are not in the files.
        if (kind, name) not in ids:
            ids[kind, name] = f"{kind[0]}{len(ids)}"
            nodes.append(Node(ids[kind, name], name or "(default)", kind, Role.DECLARED))
        return ids[kind, name]

    edges = [
        Edge(
            node_id("exchange", b.source),
            node_id(b.destination_type, b.destination),
            binding_label(b),
            dashed=b.role is not Role.DECLARED,
        )
        for b in decls.bindings
    ]
    edges += _failure_edges(decls, node_id)
    return Graph(tuple(nodes), tuple(edges))


def binding_label(binding: BindingDecl) -> str:
    """A binding's edge label: what it matches (`BindingDecl.matches`)."""
    return binding.matches


def render(decls: Declarations, fmt: Format | str = Format.MERMAID) -> str:
    """The declarations drawn in ``fmt`` (mermaid or dot), ending with a newline."""
    graph = build_graph(decls)
    if Format(fmt) is Format.DOT:
        return to_dot(graph)
    return to_mermaid(graph)


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart of ``graph``."""
    lines = ["flowchart LR"]
    for n in graph.nodes:
        label = _mermaid_text(n.label)
        lines.append(
            f'    {n.id}{{{{"{label}"}}}}' if n.kind == "exchange" else f'    {n.id}[("{label}")]'
        )
    for e in graph.edges:
        arrow = "-.->" if e.dashed else "-->"
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        lines.append(f"    {e.source} {arrow}{label} {e.target}")
    styles = (("retry", "fill:#fff4d6"), ("dead_letter", "fill:#fde2e1"), ("delay", "fill:#e3effd"))
    for role, style in styles:
        members = [n.id for n in graph.nodes if n.role.value == role]
        if members:
            lines.append(f"    classDef {role} {style}")
            lines.append(f"    class {','.join(members)} {role}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph of ``graph``."""
    lines = [
        "digraph topology {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    fills = {
        Role.DECLARED: "white",
        Role.RETRY: "#fff4d6",
        Role.DEAD_LETTER: "#fde2e1",
        Role.DELAY: "#e3effd",
    }
    for n in graph.nodes:
        shape = "hexagon" if n.kind == "exchange" else "cylinder"
        lines.append(
            f"    {n.id} [label={_dot_text(n.label)}, shape={shape}, "
            f'style=filled, fillcolor="{fills.get(n.role, "white")}"];'
        )
    for e in graph.edges:
        attrs = [f"label={_dot_text(e.label)}"] if e.label else []
        if e.dashed:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {e.source} -> {e.target}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _failure_edges(decls: Declarations, node_id: NodeId) -> Iterator[Edge]:
    for ex in decls.exchanges:
        if "alternate-exchange" in ex.arguments:
            alternate = str(ex.arguments["alternate-exchange"])
            yield Edge(
                node_id("exchange", ex.name),
                node_id("exchange", alternate),
                "unroutable",
                dashed=True,
            )
    for q in decls.queues:
        if q.role is Role.RETRY and q.owner is not None:
            ttl = q.arguments.get("x-message-ttl")
            delay = format_duration(ttl) if isinstance(ttl, int) else "?"
            yield Edge(
                node_id("queue", q.owner), node_id("queue", q.name), f"retry {delay}", dashed=True
            )
            yield Edge(
                node_id("queue", q.name), node_id("queue", q.owner), "after TTL", dashed=True
            )
        elif q.role is Role.DELAY:
            ttl = q.arguments.get("x-message-ttl")
            held = format_duration(ttl) if isinstance(ttl, int) else "?"
            below = str(q.arguments["x-dead-letter-exchange"])
            yield Edge(
                node_id("queue", q.name), node_id("exchange", below), f"after {held}", dashed=True
            )
        elif q.role is Role.DECLARED and "x-dead-letter-exchange" in q.arguments:
            dlx = str(q.arguments["x-dead-letter-exchange"])
            yield Edge(
                node_id("queue", q.name), node_id("exchange", dlx), "dead letter", dashed=True
            )


def _queue_label(q: QueueDecl) -> str:
    kind = q.arguments.get("x-queue-type", "classic")
    return q.name if kind == "classic" else f"{q.name} ({kind})"


def _mermaid_text(text: str) -> str:
    # Mermaid reads '#...;' as an entity and '"' ends the label: write both as entities.
    return text.replace("#", "#35;").replace('"', "#quot;")


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
