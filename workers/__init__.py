"""Example services for the topologies in ``topologies/``, run with ``rabbitflow run``."""
