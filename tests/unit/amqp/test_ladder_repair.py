"""The ladder repair probes RabbitMQ only (no broker here)."""

from __future__ import annotations

from typing import Any

from yarl import URL

from rabbitflow.amqp.ladder_repair import broken_ladder_queues


class _NoNetwork:
    def __init__(self, url: str) -> None:
        self.url = URL(url)

    async def channel(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("probed a broker that is not RabbitMQ")


async def test_the_in_memory_broker_is_never_probed() -> None:
    names = ["rabbitflow.delay.level.00"]
    assert await broken_ladder_queues(_NoNetwork("memory://test"), names) == []  # type: ignore[arg-type]  # a stand-in connection


async def test_nothing_to_probe_is_nothing_broken() -> None:
    assert await broken_ladder_queues(_NoNetwork("amqp://127.0.0.1:1/"), []) == []  # type: ignore[arg-type]  # a stand-in connection
