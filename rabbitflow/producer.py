"""`Producer`: publishing, request-reply and scatter-gather without running any handler —
for a web service that only publishes. `App` uses one for its own ``publish``."""

from __future__ import annotations

from types import TracebackType

from rabbitflow.amqp.connection import Link
from rabbitflow.amqp.publish import Publisher, PublishObserver
from rabbitflow.amqp.rpc import RequestClient
from rabbitflow.settings import Settings
from rabbitflow.tracing import load as load_tracing


class Producer:
    """Publishes with confirms over a connection of its own, opened on first use.

    With ``rabbitflow[otel]`` installed, each publish carries its trace context in the
    W3C ``traceparent`` header (``RABBITFLOW_TRACING=false`` turns that off).

    ``publish`` and ``publish_many`` are `Publisher`'s, ``request`` and ``gather``
    `RequestClient`'s.

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
            frame_reader=s.frame_reader,
        )
        tracer = load_tracing(s.tracing)
        self.publisher = Publisher(
            self.link,
            timeout=s.publish_timeout,
            max_message_size=s.max_message_size,
            observer=observer,
            tracer=tracer,
            compress_min_size=s.compress_min_size,
        )
        self.requests = RequestClient(
            self.link,
            observer=observer,
            tracer=tracer,
            timeout=s.publish_timeout,
            max_message_size=s.max_message_size,
        )
        # The producer adds a connection of its own and a lifecycle; publishing itself is
        # the publisher's and the request client's, bound here rather than re-declared.
        self.publish = self.publisher.publish
        self.publish_many = self.publisher.publish_many
        self.request = self.requests.request
        self.gather = self.requests.gather

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
