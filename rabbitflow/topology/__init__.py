"""YAML topology files → frozen, validated declarations (no network here)."""

from rabbitflow.topology.loader import load_text, load_topology
from rabbitflow.topology.schema import Topology

__all__ = ["Topology", "load_text", "load_topology"]
