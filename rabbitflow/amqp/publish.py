"""Publishing that never lies: confirms and mandatory on, every outcome raised, no wait
without a bound (DESIGN.md §2 ``publish``).

An unroutable message is still *confirmed* by the broker; only ``mandatory`` plus the
``basic.return`` that precedes the confirm tells the producer. A blocked connection (memory
or disk alarm) holds every write; ``publish_timeout`` turns that into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiormq
import structlog
from aio_pika.abc import AbstractChannel
from pamqp import commands as spec
from pamqp.commands import Basic

from rabbitflow import compression
from rabbitflow.amqp.connection import Link, is_blocked
from rabbitflow.amqp.transport import CONNECTION_LOST
from rabbitflow.codec import encode
from rabbitflow.errors import (
    BrokerUnavailable,
    ConfigError,
    ExchangeNotFound,
    InvalidName,
    MessageTooLarge,
    PublishError,
    PublishNacked,
    PublishTimeout,
    Unroutable,
)
from rabbitflow.topology import delay as ladder
from rabbitflow.topology.names import name_problem, short
from rabbitflow.units import parse_duration

log = structlog.get_logger("rabbitflow.publish")

NACKS_BEFORE_NEW_CHANNEL = 10
"""Consecutive nacks after which the publisher opens a new channel. After a quorum
queue's leader node dies, a channel opened while the cluster was still electing can keep
nacking every publish although a new leader serves fresh channels (RabbitMQ 3.10)."""

ChannelSetup = Callable[[aiormq.abc.AbstractChannel], Awaitable[object]]
"""Run on each new publishing channel before its first publish (the request client starts
its direct reply-to consumer there)."""

PublishObserver = Callable[[str, str, float], None]
"""Called after each publish with (exchange, outcome, seconds until the broker answered);
outcome is ``confirmed``, ``nacked``, ``returned`` or ``failed``."""


class PublishTracer(Protocol):
    """Opens a producer span around a new message; `rabbitflow.tracing` implements it."""

    def publishing(
        self, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> AbstractContextManager[object]:
        """A span for one publish; writes its context (``traceparent``) into ``headers``."""


def properties(
    *,
    content_type: str | None = None,
    headers: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    persistent: bool = True,
    expiration: str | int | None = None,
    priority: int | None = None,
    timestamp: datetime | None = None,
    type: str | None = None,
    app_id: str | None = "rabbitflow",
) -> Basic.Properties:
    """AMQP properties for a new message; a ``message_id`` is made when none is given, so
    consumers can deduplicate by default."""
    return Basic.Properties(
        content_type=content_type,
        headers=dict(headers) if headers else None,
        delivery_mode=2 if persistent else 1,
        message_id=message_id or uuid.uuid4().hex,
        correlation_id=correlation_id,
        reply_to=reply_to,
        expiration=str(expiration) if expiration is not None else None,
        priority=priority,
        timestamp=timestamp or datetime.now(UTC).replace(microsecond=0),
        message_type=type,
        app_id=app_id,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for `Publisher.publish_many`."""

    exchange: str
    routing_key: str
    body: object
    headers: Mapping[str, Any] | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    expiration: str | int | None = None
    properties: Basic.Properties | None = None
    """Send ``body`` (bytes) as it is with exactly these properties (a copy of a stored
    message, e.g. a stream replay); the fields above then do not apply."""


@dataclass
class BulkResult:
    """What happened to each message of a bulk publish, by index."""

    confirmed: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    """Messages sent without confirms (``confirm=False``): written, fate unknown."""
    returned: list[int] = field(default_factory=list)
    nacked: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    """Messages whose outcome is unknown or that could not be sent, with the reason."""

    @property
    def ok(self) -> bool:
        return not (self.returned or self.nacked or self.failed)


class Publisher:
    """Publishes over its own connection with publisher confirms.

    The one publish path of rabbitflow: user publishes, RPC requests (the request client
    owns a `Publisher` whose channel also consumes the replies) and replies, retry and
    dead-letter copies and DLQ replays all end in `send`, with one size check, one
    alarm-aware timeout, one nack-streak reset and one translation of the broker's
    answers into `PublishError`s.

    The connection is separate from the consumers' so that a broker alarm, which blocks
    publishing connections, never stops a worker from acking.
    """

    def __init__(
        self,
        link: Link,
        *,
        timeout: float = 10.0,
        max_message_size: int = 16 * 1024 * 1024,
        observer: PublishObserver | None = None,
        tracer: PublishTracer | None = None,
        compress_min_size: int | None = None,
        delayed: Iterable[str] | None = None,
        setup: ChannelSetup | None = None,
    ) -> None:
        self.link = link
        self.setup = setup
        self.compress_min_size = compress_min_size
        self.delayed: frozenset[str] | None = None if delayed is None else frozenset(delayed)
        """Exchanges that can receive delayed messages; None: not known (no topology)."""
        self._plain: AbstractChannel | None = None
        self._plain_raw: aiormq.abc.AbstractChannel | None = None
        self.timeout = timeout
        self.max_message_size = max_message_size
        self.observer = observer
        self.tracer = tracer
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._nacks_in_row = 0
        self._closing: set[asyncio.Task[None]] = set()

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        raw = self._raw
        if raw is not None and not raw.is_closed:
            return raw
        async with self._lock:
            if self._raw is None or self._raw.is_closed:
                connection = await self.link.get()
                self._channel = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                raw = await self._channel.get_underlay_channel()
                if self.setup is not None:
                    await self.setup(raw)
                self._raw = raw
            return self._raw

    async def _unconfirmed(self) -> aiormq.abc.AbstractChannel:
        """The channel for ``confirm=False``: no publisher confirms, nothing to wait for."""
        raw = self._plain_raw
        if raw is not None and not raw.is_closed:
            return raw
        async with self._lock:
            if self._plain_raw is None or self._plain_raw.is_closed:
                connection = await self.link.get()
                self._plain = await connection.channel(publisher_confirms=False)
                self._plain_raw = await self._plain.get_underlay_channel()
            return self._plain_raw

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: object,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        persistent: bool = True,
        mandatory: bool = True,
        expiration: str | int | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        content_type: str | None = None,
        confirm: bool = True,
        delay: float | str | timedelta | None = None,
        compress: bool | None = None,
    ) -> str:
        """Publish one message and return once the broker confirmed it.

        ``content_type`` overrides the one chosen from the body's type; a ``str`` or
        ``bytes`` body is then sent as it is. ``confirm=False`` returns once the frame is
        written (fire-and-forget, not mandatory). ``delay`` (seconds or a duration such as
        ``"10m"``) hands the message to the ``rabbitflow.delay.*`` ladder, which delivers it
        to ``exchange`` after the delay. ``compress=True`` gzips the body (``None``: above
        ``compress_min_size``).

        Returns:
            The message's ``message_id`` (made when none is given).

        Raises:
            InvalidName: before sending, for an exchange or routing key the broker or the
                AMQP client would refuse (over 255 bytes, characters it cannot send).
            MessageTooLarge: before sending a body over ``max_message_size``.
            Unroutable: a mandatory message matched no queue.
            PublishNacked: the broker refused it (e.g. a full reject-publish queue).
            ExchangeNotFound: the exchange does not exist; the next publish still works.
            PublishTimeout: no answer within the timeout (e.g. the broker blocked us).
            PublishError: the connection was lost before the broker answered.
            BrokerUnavailable: no broker could be reached.
        """
        data, chosen = encode(body)
        encoding = None
        if compression.should_compress(
            len(data), compress=compress, min_size=self.compress_min_size
        ):
            data, encoding = compression.gzip_body(data), compression.GZIP
        props = properties(
            content_type=content_type or chosen,
            headers=headers,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            persistent=persistent,
            expiration=expiration,
            priority=priority,
        )
        props.content_encoding = encoding
        if delay is not None:
            exchange = self._delayed(exchange, delay, props)
        if self.tracer is None:
            await self.send(
                exchange,
                routing_key,
                data,
                props,
                mandatory=mandatory,
                timeout=timeout,
                confirm=confirm,
            )
        else:
            # Only new messages get a context of their own: retry and dead-letter copies
            # go through `send` and keep the one the original carried.
            carrier = dict(props.headers or {})
            with self.tracer.publishing(exchange, routing_key, carrier):
                if carrier:  # the span's context, when tracing is configured
                    props.headers = carrier
                await self.send(
                    exchange,
                    routing_key,
                    data,
                    props,
                    mandatory=mandatory,
                    timeout=timeout,
                    confirm=confirm,
                )
        assert props.message_id is not None
        return props.message_id

    async def send(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: Basic.Properties,
        *,
        mandatory: bool = True,
        timeout: float | None = None,
        confirm: bool = True,
    ) -> None:
        """Publish raw bytes with given properties; the core of every publish.

        ``confirm=False``: on the unconfirmed channel, not mandatory, done once written.

        Raises:
            The same errors as `publish`.
        """
        check_destination(exchange, routing_key)
        if len(body) > self.max_message_size:
            raise MessageTooLarge(
                f"message of {len(body)} bytes for exchange {exchange!r} exceeds the "
                f"{self.max_message_size}-byte limit (RABBITFLOW_MAX_MESSAGE_SIZE)"
            )
        limit = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        outcome = "failed"
        raw: aiormq.abc.AbstractChannel | None = None
        try:
            async with asyncio.timeout(limit):
                raw = await (self._underlay() if confirm else self._unconfirmed())
                result = await raw.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=props,
                    mandatory=mandatory and confirm,
                )
            if not confirm:
                outcome = "written"
                return
            if isinstance(result, spec.Basic.Nack):
                raise aiormq.exceptions.DeliveryError(None, result)
            self._nacks_in_row = 0
            outcome = "confirmed"
        except TimeoutError:
            raise self._timeout_error(exchange, routing_key, limit) from None
        except aiormq.exceptions.PublishError as exc:
            outcome = "returned"
            reply = getattr(exc.frame, "reply_text", "NO_ROUTE") if exc.frame else "NO_ROUTE"
            raise Unroutable(exchange, routing_key, str(reply)) from None
        except aiormq.exceptions.DeliveryError:
            # aiormq raises a nack (it does not return it); a run of them may mean a
            # channel stuck on a dead quorum leader.
            if raw is not None:
                self._nacked(raw)
            outcome = "nacked"
            raise PublishNacked(
                f"the broker nacked the message to exchange {exchange!r} "
                f"with routing key {routing_key!r} (a full queue with "
                "overflow reject-publish, or a broker error)"
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise ExchangeNotFound(
                f"exchange {exchange!r} does not exist on the broker "
                f"({_reply_text(exc)}); declare the topology first"
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise PublishError(f"publishing to {exchange!r} refused: {_reply_text(exc)}") from None
        except BrokerUnavailable:
            raise
        except CONNECTION_LOST as exc:
            raise PublishError(
                f"connection lost before the broker confirmed the message to exchange "
                f"{exchange!r}; it may or may not have been delivered ({_reply_text(exc)})"
            ) from None
        finally:
            if self.observer is not None:
                self.observer(exchange, outcome, time.perf_counter() - started)

    def _delayed(
        self, exchange: str, delay: float | str | timedelta, props: Basic.Properties
    ) -> str:
        """Route a message through the delay ladder: returns the exchange to publish to."""
        if self.delayed is not None and exchange not in self.delayed:
            raise ConfigError(
                f"exchange {exchange!r} cannot receive delayed messages; "
                "set `delayed: true` on it in the topology"
            )
        if exchange == "":
            raise ConfigError("the default exchange cannot receive delayed messages")
        try:
            seconds = ladder.whole_seconds(delay_seconds(delay))
        except ValueError as exc:
            raise ConfigError(f"bad delay {delay!r}: {exc}") from None
        props.headers = {**(props.headers or {}), **ladder.headers_for(exchange, seconds)}
        return ladder.entry()

    def _nacked(self, raw: aiormq.abc.AbstractChannel) -> None:
        self._nacks_in_row += 1
        if self._nacks_in_row < NACKS_BEFORE_NEW_CHANNEL or raw is not self._raw:
            return
        self._nacks_in_row = 0
        log.warning(
            "the broker nacks every publish on this channel; opening a new one",
            nacks=NACKS_BEFORE_NEW_CHANNEL,
        )
        channel, self._channel, self._raw = self._channel, None, None
        if channel is not None:
            task = asyncio.get_running_loop().create_task(_close_quietly(channel))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _timeout_error(self, exchange: str, routing_key: str, limit: float) -> PublishTimeout:
        connection = self.link.current
        if connection is not None and is_blocked(connection):
            log.warning(
                "publish blocked by the broker (memory or disk alarm)",
                exchange=exchange,
                timeout_s=limit,
            )
            return PublishTimeout(
                f"publishing to {exchange!r} timed out after {limit:g}s: the broker blocked "
                "the connection (memory or disk alarm); back off and retry"
            )
        return PublishTimeout(
            f"no confirm for the message to exchange {exchange!r} with "
            f"routing key {routing_key!r} within {limit:g}s"
        )

    async def publish_many(
        self,
        messages: Iterable[Outgoing] | AsyncIterable[Outgoing],
        *,
        window: int = 1000,
        progress: Callable[[int], None] | None = None,
        confirm: bool = True,
        delay: float | str | timedelta | None = None,
        compress: bool | None = None,
    ) -> BulkResult:
        """Publish many messages with pipelined confirms, at most ``window`` unconfirmed.

        Never raises for a single message: each outcome is reported in the result.
        ``progress`` is called with each message's index once its outcome is known.
        """
        result = BulkResult()
        items = _aiter(messages).__aiter__()
        take = asyncio.Lock()
        counter = iter(range(1 << 62))

        async def lane() -> None:
            # `window` lanes each publish one message at a time: at most `window` are
            # unconfirmed, with no task per message. A lane takes its next message and
            # writes it before another lane can take one, so the order is kept.
            while True:
                async with take:
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        return
                    index = next(counter)
                try:
                    if item.properties is not None:
                        if not isinstance(item.body, bytes):
                            raise PublishError("a message with properties= needs a bytes body")
                        await self.send(
                            item.exchange,
                            item.routing_key,
                            item.body,
                            item.properties,
                            confirm=confirm,
                        )
                    else:
                        await self.publish(
                            item.exchange,
                            item.routing_key,
                            item.body,
                            headers=item.headers,
                            message_id=item.message_id,
                            correlation_id=item.correlation_id,
                            content_type=item.content_type,
                            expiration=item.expiration,
                            confirm=confirm,
                            delay=delay,
                            compress=compress,
                        )
                    (result.confirmed if confirm else result.written).append(index)
                except Unroutable:
                    result.returned.append(index)
                except PublishNacked:
                    result.nacked.append(index)
                except (PublishError, ConfigError) as exc:
                    result.failed[index] = str(exc)
                if progress is not None:
                    progress(index)

        # Open the channel first, so that no lane waits for it and overtakes another.
        await (self._underlay() if confirm else self._unconfirmed())
        await asyncio.gather(*(lane() for _ in range(max(1, window))))
        for outcome in (result.confirmed, result.written, result.returned, result.nacked):
            outcome.sort()
        return result

    async def close(self) -> None:
        """Close the channel (the link is closed by its owner)."""
        plain, self._plain, self._plain_raw = self._plain, None, None
        if plain is not None and not plain.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError, RuntimeError):
                await plain.close()
        channel, self._channel, self._raw = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_LOST):
                await channel.close()


def check_destination(exchange: str, routing_key: str) -> None:
    """Raise `InvalidName` for an exchange or routing key that cannot be sent, before
    the AMQP codec raises a bare ``ValueError`` deep in a publish."""
    problem = name_problem(exchange, "exchange") if exchange else None
    if problem is not None:
        raise InvalidName(f"cannot publish to exchange {short(exchange)}: {problem}")
    problem = name_problem(routing_key, "routing key")
    if problem is not None:
        raise InvalidName(f"cannot publish with routing key {short(routing_key)}: {problem}")


def delay_seconds(delay: float | str | timedelta) -> float:
    """A delay in seconds: a number of seconds, a duration string (``"10m"``) or a
    ``timedelta``."""
    if isinstance(delay, timedelta):
        return delay.total_seconds()
    if isinstance(delay, str):
        return parse_duration(delay.strip()) / 1000
    if isinstance(delay, bool):
        raise ValueError("a delay is seconds or a duration such as 10m")
    return float(delay)


async def _close_quietly(channel: AbstractChannel) -> None:
    with contextlib.suppress(*CONNECTION_LOST, TimeoutError):
        await asyncio.wait_for(channel.close(), 5)


async def _aiter(items: Iterable[Outgoing] | AsyncIterable[Outgoing]) -> AsyncIterable[Outgoing]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _reply_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    for arg in args:
        text = getattr(arg, "reply_text", None)
        if text:
            return str(text)
    return str(exc) or type(exc).__name__
