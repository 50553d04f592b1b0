"""The topology graph laid out in columns and drawn as SVG, on the server; pure.

Columns, left to right: exchanges (by exchange-to-exchange depth), work queues, then
what serves them on failure (retry delay queues and ``Q.dlx`` exchanges), then the
dead-letter queues. Within a column nodes sit as close as they can to the mean height of
the nodes pointing at them, so a queue's retry queues and DLQ line up beside it. No
browser library draws it: the page stays one static SVG whose figures a small script
rewrites every 2 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from rabbitflow.render.graph import Edge, Graph, Node
from rabbitflow.topology.expand import Role

COLUMN = 292
"""Horizontal distance between columns, in SVG units."""
ROW = 82
"""Vertical distance between node slots."""
MARGIN = 24
EXCHANGE_SIZE = (190, 40)
QUEUE_SIZE = (250, 62)


@dataclass(frozen=True)
class Placed:
    """A node with its box."""

    node: Node
    x: float
    y: float
    width: float
    height: float
    queue: str | None
    """The queue's name for queue nodes (the page looks figures up by it)."""


@dataclass(frozen=True)
class Layout:
    """Every node placed, and the canvas size."""

    nodes: tuple[Placed, ...]
    edges: tuple[Edge, ...]
    width: float
    height: float


def columns(graph: Graph) -> dict[str, int]:
    """The column of every node id."""
    depth = _exchange_depths(graph)
    work = max(depth.values(), default=-1) + 1
    out: dict[str, int] = {}
    for n in graph.nodes:
        if n.kind == "exchange":
            out[n.id] = work + 1 if n.role is Role.DEAD_LETTER else depth[n.id]
        elif n.role is Role.RETRY:
            out[n.id] = work + 1
        elif n.role is Role.DEAD_LETTER:
            out[n.id] = work + 2
        else:
            out[n.id] = work
    # A column left empty (no exchange feeds another, no DLX) would only add space.
    used = sorted(set(out.values()))
    squeeze = {c: i for i, c in enumerate(used)}
    return {k: squeeze[v] for k, v in out.items()}


def layout(graph: Graph) -> Layout:
    """Place every node of ``graph``."""
    col = columns(graph)
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        if col[e.source] < col[e.target]:
            preds[e.target].append(e.source)
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    ys: dict[str, float] = {}
    placed: list[Placed] = []
    for c in range(max(col.values(), default=-1) + 1):
        members = [n for n in graph.nodes if col[n.id] == c]

        def wanted(n: Node) -> float:
            above = [ys[p] for p in preds[n.id] if p in ys]
            return sum(above) / len(above) if above else float("inf")

        members.sort(key=lambda n: (wanted(n), order[n.id]))
        next_free = 0.0
        for n in members:
            want = wanted(n)
            slot = max(next_free, want if want != float("inf") else next_free)
            ys[n.id] = slot
            next_free = slot + 1
            width, height = (
                (float(EXCHANGE_SIZE[0]), float(EXCHANGE_SIZE[1]))
                if n.kind == "exchange"
                else (float(QUEUE_SIZE[0]), float(QUEUE_SIZE[1]))
            )
            centre = MARGIN + slot * ROW + QUEUE_SIZE[1] / 2
            placed.append(
                Placed(
                    n,
                    MARGIN + c * COLUMN,
                    centre - height / 2,
                    width,
                    height,
                    _queue_name(n) if n.kind == "queue" else None,
                )
            )
    width = max((p.x + p.width for p in placed), default=0) + MARGIN
    height = max((p.y + p.height for p in placed), default=0) + MARGIN
    return Layout(tuple(placed), graph.edges, width, height)


def to_svg(graph: Graph, names: Mapping[str, str] | None = None) -> str:
    """The graph as an inline SVG element.

    Args:
        graph: from `rabbitflow.render.graph.build_graph`.
        names: queue name by node id (labels carry ``(quorum)``); taken from the labels
            when not given.
    """
    laid = layout(graph)
    if names is not None:
        laid = Layout(
            tuple(
                Placed(p.node, p.x, p.y, p.width, p.height, names.get(p.node.id, p.queue))
                for p in laid.nodes
            ),
            laid.edges,
            laid.width,
            laid.height,
        )
    by_id = {p.node.id: p for p in laid.nodes}
    # A retry edge and its "after TTL" return are drawn as one two-headed arrow.
    pairs = {(e.source, e.target) for e in laid.edges}
    returns = {
        (e.source, e.target)
        for e in laid.edges
        if e.label == "after TTL" and (e.target, e.source) in pairs
    }
    drawn = [e for e in laid.edges if (e.source, e.target) not in returns]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" role="img" '
        f'aria-label="topology graph" width="{laid.width:.0f}" height="{laid.height:.0f}" '
        f'viewBox="0 0 {laid.width:.0f} {laid.height:.0f}">',
        "<defs>",
        *(
            f'<marker id="arrow-{kind}" class="arrow-{kind}" viewBox="0 0 10 10" refX="9" '
            'refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M 0 0 L 10 5 L 0 10 z"/></marker>'
            for kind in ("binding", "retry", "dead", "unroutable")
        ),
        "</defs>",
        '<g class="edges">',
        *(
            _edge(e, by_id[e.source], by_id[e.target], (e.target, e.source) in returns)
            for e in drawn
        ),
        "</g>",
        '<g class="nodes">',
        *(_node(p) for p in laid.nodes),
        "</g>",
        "</svg>",
    ]
    return "\n".join(parts)


def _exchange_depths(graph: Graph) -> dict[str, int]:
    exchanges = {n.id for n in graph.nodes if n.kind == "exchange"}
    feeds: dict[str, list[str]] = {x: [] for x in exchanges}
    for e in graph.edges:
        if e.source in exchanges and e.target in exchanges and e.source != e.target:
            feeds[e.target].append(e.source)
    depth: dict[str, int] = {}

    def visit(x: str, seen: frozenset[str]) -> int:
        if x not in depth:
            # A cycle of exchange bindings is legal in RabbitMQ: cut it where it closes.
            depth[x] = max((visit(s, seen | {x}) + 1 for s in feeds[x] if s not in seen), default=0)
        return depth[x]

    for x in exchanges:
        visit(x, frozenset())
    return depth


def _queue_name(n: Node) -> str:
    name, sep, kind = n.label.rpartition(" (")
    return name if sep and kind.rstrip(")") in ("quorum", "stream") else n.label


def _edge_class(e: Edge, target: Node) -> str:
    if e.label.startswith("retry") or e.label == "after TTL":
        return "retry"
    if e.label == "dead letter" or (e.dashed and target.role is Role.DEAD_LETTER):
        return "dead"
    if e.label == "unroutable":
        return "unroutable"
    return "binding"


def _edge(e: Edge, a: Placed, b: Placed, both_ways: bool = False) -> str:
    kind = _edge_class(e, b.node)
    if b.x > a.x:
        sx, sy = a.x + a.width, a.y + a.height / 2
        tx, ty = b.x, b.y + b.height / 2
        bend = (tx - sx) / 2
        d = (
            f"M {sx:.0f} {sy:.0f} C {sx + bend:.0f} {sy:.0f} "
            f"{tx - bend:.0f} {ty:.0f} {tx:.0f} {ty:.0f}"
        )
        # Near the target: a queue's retry and dead-letter edges leave from one point.
        share = 0.78 if e.dashed else 0.5
        lx, ly = sx + (tx - sx) * share, sy + (ty - sy) * share - 3
    else:
        # Backwards (a retry queue's TTL back to its queue) or within a column: an arc
        # under both boxes.
        sx, sy = a.x + a.width * 0.3, a.y + a.height
        tx, ty = b.x + b.width * 0.7, b.y + b.height
        drop = max(sy, ty) + 22
        d = f"M {sx:.0f} {sy:.0f} C {sx:.0f} {drop:.0f} {tx:.0f} {drop:.0f} {tx:.0f} {ty:.0f}"
        lx, ly = (sx + tx) / 2, drop - 4
    dash = " dashed" if e.dashed else ""
    start = f' marker-start="url(#arrow-{kind})"' if both_ways else ""
    # A retry queue's name says its delay: the edge needs no label.
    label = (
        f'<text class="edge-label" x="{lx:.0f}" y="{ly:.0f}">{escape(e.label)}</text>'
        if e.label and kind != "retry"
        else ""
    )
    return (
        f'<g class="edge {kind}{dash}"><path d="{d}"{start} marker-end="url(#arrow-{kind})"/>'
        f"{label}</g>"
    )


def _node(p: Placed) -> str:
    n = p.node
    classes = f"node {n.kind} role-{n.role.value}"
    cx = p.x + p.width / 2
    if n.kind == "exchange":
        inset = 12
        points = " ".join(
            f"{x:.0f},{y:.0f}"
            for x, y in (
                (p.x + inset, p.y),
                (p.x + p.width - inset, p.y),
                (p.x + p.width, p.y + p.height / 2),
                (p.x + p.width - inset, p.y + p.height),
                (p.x + inset, p.y + p.height),
                (p.x, p.y + p.height / 2),
            )
        )
        return (
            f'<g class="{classes}" data-exchange="{escape(n.label)}">'
            f'<polygon points="{points}"/>'
            f'<text class="name" x="{cx:.0f}" y="{p.y + p.height / 2 + 4:.0f}">'
            f"{escape(_fit(n.label, 30))}</text></g>"
        )
    queue = escape(p.queue or n.label)
    return (
        f'<g class="{classes}" data-queue="{queue}" tabindex="0">'
        f"<title>{escape(n.label)}</title>"
        f'<rect x="{p.x:.0f}" y="{p.y:.0f}" width="{p.width:.0f}" height="{p.height:.0f}" '
        'rx="8"/>'
        f'<text class="name" x="{cx:.0f}" y="{p.y + 18:.0f}">{escape(_fit(n.label, 40))}</text>'
        f'<text class="figs" x="{cx:.0f}" y="{p.y + 36:.0f}">…</text>'
        f'<text class="rates" x="{cx:.0f}" y="{p.y + 53:.0f}"></text></g>'
    )


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def node_names(nodes: Sequence[Node]) -> dict[str, str]:
    """Queue name by node id, from the labels."""
    return {n.id: _queue_name(n) for n in nodes if n.kind == "queue"}
