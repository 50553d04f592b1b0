"""Request-reply and scatter-gather over RabbitMQ's direct reply-to.

Direct reply-to needs no reply queue: the requester consumes the pseudo-queue
``amq.rabbitmq.reply-to`` (no-ack) on a channel and publishes requests *on that same
channel* with ``reply_to`` set to it; the broker routes replies straight back. Replies are
matched to requests by ``correlation_id``, so many requests share one channel.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import aiormq
from aiormq.abc import DeliveredMessage
from pydantic import TypeAdapter, ValidationError

from rabbitflow.amqp.connection import Link
from rabbitflow.amqp.publish import Publisher, PublishObserver, PublishTracer, properties
from rabbitflow.codec import encode
from rabbitflow.errors import BodyDecodeError, RemoteError, RequestTimeout
from rabbitflow.headers import ERROR, ERROR_TYPE, read_text

REPLY_TO = "amq.rabbitmq.reply-to"
T = TypeVar("T")


class Replies(list[Any]):
    """What `gather` returns: the answers, in order of arrival, as a list; the error
    replies (a responder whose handler failed) apart, in ``errors``."""

    def __init__(self, answers: list[Any], errors: list[RemoteError]) -> None:
        super().__init__(answers)
        self.errors = errors
        """One `RemoteError` per responder that replied with an error."""


def remote_error(message: DeliveredMessage) -> RemoteError | None:
    """The `RemoteError` an error reply stands for (DESIGN.md §13), else None.

    An error reply carries ``x-rabbitflow-error`` (``Type: message``) and
    ``x-rabbitflow-error-type`` (``Type``) and an empty body.
    """
    headers = message.header.properties.headers
    if not headers or ERROR not in headers:
        return None
    text = read_text(headers, ERROR, limit=4096) or "unreadable error"
    kind = read_text(headers, ERROR_TYPE) or text.split(":", 1)[0].strip() or "Error"
    prefix = f"{kind}:"
    detail = text[len(prefix) :].strip() if text.startswith(prefix) else text
    return RemoteError(kind, "" if detail == kind else detail)


def decode_reply(message: DeliveredMessage, model: Any = None) -> Any:
    """A reply's value: JSON decoded (and validated into ``model``), text as ``str``,
    anything else as ``bytes``.

    Raises:
        RemoteError: the reply is an error reply.
    """
    error = remote_error(message)
    if error is not None:
        raise error
    content_type = (message.header.properties.content_type or "").split(";")[0].strip()
    body = message.body
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            if model is not None:
                return TypeAdapter(model).validate_json(body)
            return json.loads(body)
        except (ValueError, ValidationError) as exc:
            raise BodyDecodeError(f"reply does not validate: {exc}") from None
    if content_type.startswith("text/"):
        return body.decode("utf-8", "replace")
    return body


class RequestClient:
    """Sends requests and collects replies on one channel of a `Link`.

    Requests go through a `Publisher` of their own (the shared publish path: same errors,
    size check, alarm-aware timeout and nack-streak reset as every other publish), whose
    channel also consumes ``amq.rabbitmq.reply-to``.
    """

    def __init__(
        self,
        link: Link,
        *,
        observer: PublishObserver | None = None,
        tracer: PublishTracer | None = None,
        timeout: float = 10.0,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.link = link
        self.observer = observer
        self.tracer = tracer
        self.publisher = Publisher(
            link,
            timeout=timeout,
            max_message_size=max_message_size,
            observer=observer,
            setup=self._consume_replies,
        )
        self._waiting: dict[str, asyncio.Queue[DeliveredMessage]] = {}

    async def _consume_replies(self, raw: aiormq.abc.AbstractChannel) -> None:
        # Direct reply-to: the requests must be published on the channel that consumes
        # the pseudo-queue, so the publisher's channel is that channel.
        await raw.basic_consume(REPLY_TO, self._on_reply, no_ack=True)

    async def _on_reply(self, message: DeliveredMessage) -> None:
        waiting = self._waiting.get(message.header.properties.correlation_id or "")
        if waiting is not None:
            waiting.put_nowait(message)

    async def _send(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        correlation_id: str,
        headers: Mapping[str, Any] | None,
        timeout: float,
    ) -> None:
        data, content_type = encode(body)
        props = properties(
            content_type=content_type,
            headers=headers,
            correlation_id=correlation_id,
            reply_to=REPLY_TO,
            persistent=False,
            expiration=max(int(timeout * 1000), 1),
        )
        if self.tracer is None:
            await self.publisher.send(exchange, routing_key, data, props, mandatory=True)
            return
        carrier = dict(props.headers or {})
        with self.tracer.publishing(exchange, routing_key, carrier):
            if carrier:  # the span's context, when tracing is configured
                props.headers = carrier
            await self.publisher.send(exchange, routing_key, data, props, mandatory=True)

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
        """Send a request and return its reply.

        The request carries an ``expiration`` equal to the timeout, so a request nobody
        answered in time is not processed late.

        Raises:
            RequestTimeout: no reply within ``timeout`` seconds.
            RemoteError: the responder's handler failed (its reply names the error).
            Unroutable: no queue is bound for the request.
        """
        replies = await self._collect(
            exchange, routing_key, body, expected=1, timeout=timeout, headers=headers
        )
        if not replies:
            raise RequestTimeout(f"no reply from {exchange!r}/{routing_key!r} within {timeout:g}s")
        return decode_reply(replies[0], model)

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
    ) -> Replies:
        """Scatter one request to every bound responder (fanout/topic) and gather replies
        until ``expected`` arrived (error replies count) or ``timeout`` passed.

        Returns:
            The answers, in order of arrival, as a list; error replies apart in its
            ``errors`` (`RemoteError` each).
        """
        replies = await self._collect(
            exchange, routing_key, body, expected=expected, timeout=timeout, headers=headers
        )
        answers: list[Any] = []
        errors: list[RemoteError] = []
        for reply in replies:
            error = remote_error(reply)
            if error is None:
                answers.append(decode_reply(reply, model))
            else:
                errors.append(error)
        return Replies(answers, errors)

    async def _collect(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        expected: int | None,
        timeout: float,
        headers: Mapping[str, Any] | None,
    ) -> list[DeliveredMessage]:
        correlation_id = uuid.uuid4().hex
        inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._waiting[correlation_id] = inbox
        replies: list[DeliveredMessage] = []
        try:
            async with asyncio.timeout(timeout):
                await self._send(exchange, routing_key, body, correlation_id, headers, timeout)
                while expected is None or len(replies) < expected:
                    replies.append(await inbox.get())
        except TimeoutError:
            pass
        finally:
            del self._waiting[correlation_id]
        return replies

    async def close(self) -> None:
        await self.publisher.close()
