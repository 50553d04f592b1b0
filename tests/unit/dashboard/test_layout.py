"""The server-side layout and SVG of the topology graph."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rabbitflow.dashboard.layout import columns, layout, node_names, to_svg
from rabbitflow.render.graph import Graph, build_graph
from rabbitflow.topology import load_topology
from rabbitflow.topology.expand import expand
from rabbitflow.topology.schema import Topology

ORDERS = Path(__file__).parents[3] / "topologies" / "orders.yaml"


def orders_graph() -> Graph:
    return build_graph(expand(load_topology([ORDERS])))


def test_columns_go_exchanges_then_work_queues_then_retry_and_dlx_then_dlqs() -> None:
    graph = orders_graph()
    col = columns(graph)
    names = node_names(graph.nodes)
    by_label = {names.get(n.id, n.label): col[n.id] for n in graph.nodes}
    assert by_label["orders (topic)"] == 0
    assert by_label["notifications (fanout)"] == 1  # fed by orders
    assert by_label["payments.charge"] == 2
    assert by_label["notify.email"] == 2
    assert by_label["payments.charge.retry.200ms"] == 3
    assert by_label["payments.charge.dlx (fanout)"] == 3
    assert by_label["payments.charge.dlq"] == 4


def test_no_two_nodes_overlap_and_a_dlq_sits_beside_its_queue() -> None:
    laid = layout(orders_graph())
    boxes = [(p.x, p.y, p.x + p.width, p.y + p.height) for p in laid.nodes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    y = {p.queue: p.y for p in laid.nodes if p.queue}
    assert y["payments.charge.dlq"] >= y["payments.charge"]
    assert y["payments.charge.dlq"] < y["shipping.prepare.dlq"]


def test_svg_names_every_queue_and_exchange_and_escapes_labels() -> None:
    # Validation refuses such names in files; a live vhost (no files) can hold them, as
    # RabbitMQ accepts any UTF-8 name: build the model without file validation.
    topology = Topology.model_validate(
        yaml.safe_load(
            """
version: 1
exchanges:
  "a<b": {type: direct}
queues:
  "q&1":
    bind: [{exchange: "a<b", routing_key: "k<"}]
    retry: {max_retries: 1, delay: 1s}
"""
        )
    )
    graph = build_graph(expand(topology))
    svg = to_svg(graph, node_names(graph.nodes))
    assert 'data-exchange="a&lt;b (direct)"' in svg
    assert 'data-queue="q&amp;1"' in svg and 'data-queue="q&amp;1.dlq"' in svg
    assert ">k&lt;</text>" in svg
    assert "<script" not in svg
    # The retry edge and its "after TTL" return are one two-headed arrow.
    assert "retry 1s" not in svg and "after TTL" not in svg  # the node's name says it
    assert len(re.findall(r'marker-start="url\(#arrow-retry\)"', svg)) == 1
