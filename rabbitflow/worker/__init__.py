"""The worker runtime: handlers, consumers, and the resilience building blocks they use."""
