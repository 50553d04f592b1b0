"""Benchmark workers: each runs in its own interpreter, started by the harness."""
