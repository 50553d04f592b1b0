"""Benchmarks: rabbitflow against raw aio-pika and FastStream on the local broker."""
