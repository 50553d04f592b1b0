"""`Producer`: publishing, request-reply and scatter-gather without running any handler —
for a web service that only publishes. `App` uses one for its own ``publish``."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from rabbitflow.amqp.connection import Link
from rabbitflow.amqp.publish import BulkResult, Outgoing, Publisher, PublishObserver
from rabbitflow.amqp.rpc import RequestClient
from rabbitflow.settings import Settings
from rabbitflow.tracing import load as load_tracing


class Producer:
    """Publishes with confirms over a connection of its own, opened on first use.

    With ``rabbitflow[otel]`` installed, each publish carries its trace context in the
    W3C ``traceparent`` header (``RABBITFLOW_TRACING=false`` turns that off).

    Example:
        async with Producer("amqp://guest:guest@localhost/") as producer:
            await producer.publish("orders", "order.placed", {"order_id": "42"})
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        name: str = "rabbitflow-producer",
        observer: PublishObserver | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if url is not None:
            self.settings = self.settings.model_copy(update={"url": url})
        s = self.settings
        self.link = Link(
            s.urls,
            name=name,
            timeout=s.connect_timeout,
            heartbeat=s.heartbeat,
            tls_verify=s.tls_verify,
        )
        tracer = load_tracing(s.tracing)
        self.publisher = Publisher(
            self.link,
            timeout=s.publish_timeout,
            max_message_size=s.max_message_size,
            observer=observer,
            tracer=tracer,
        )
        self.requests = RequestClient(self.link, observer=observer, tracer=tracer)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        persistent: bool = True,
        mandatory: bool = True,
        expiration: str | int | None = None,
        priority: int | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publish and wait for the broker's confirm; see `Publisher.publish`."""
        return await self.publisher.publish(
            exchange,
            routing_key,
            body,
            headers=headers,
            message_id=message_id,
            correlation_id=correlation_id,
            persistent=persistent,
            mandatory=mandatory,
            expiration=expiration,
            priority=priority,
            timeout=timeout,
        )

    async def publish_many(
        self,
        messages: Iterable[Outgoing] | AsyncIterable[Outgoing],
        *,
        window: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> BulkResult:
        """Publish many with pipelined confirms; see `Publisher.publish_many`."""
        return await self.publisher.publish_many(messages, window=window, progress=progress)

    async def request(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        timeout: float = 5.0,
        model: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send a request over direct reply-to and return the reply; see `RequestClient`."""
        return await self.requests.request(
            exchange, routing_key, body, timeout=timeout, model=model, headers=headers
        )

    async def gather(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        timeout: float = 5.0,
        expected: int | None = None,
        model: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Scatter a request to every responder and gather replies; see `RequestClient`."""
        return await self.requests.gather(
            exchange,
            routing_key,
            body,
            timeout=timeout,
            expected=expected,
            model=model,
            headers=headers,
        )

    async def close(self) -> None:
        """Close channels and the connection."""
        await self.requests.close()
        await self.publisher.close()
        await self.link.close()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
