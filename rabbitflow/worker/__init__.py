"""Handlers, deliveries and the process that runs them."""
