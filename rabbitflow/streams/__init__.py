"""Streams and event sourcing (DESIGN.md §9): replay, offset stores, stream status."""
