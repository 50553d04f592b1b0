"""Connections and channels of the in-memory broker, shaped like the parts of aio-pika
and aiormq that rabbitflow calls (``connection.channel()``, ``get_underlay_channel()``,
``basic_*``, ``*_declare``), so `App`, `Worker`, `Publisher` and `RequestClient` run on
them unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.channel import exception_by_code
from pamqp.commands import Basic, Channel, Exchange, Queue
from pamqp.header import ContentHeader

from rabbitflow.testing.memory.broker import MemoryBroker
from rabbitflow.testing.memory.model import BrokerError, Consumer, Stored, copy_properties
from rabbitflow.testing.memory.model import Queue as MemoryQueue
from rabbitflow.testing.memory.streams import STREAM_OFFSET, start_cursor

if TYPE_CHECKING:
    from rabbitflow.testing.memory.connection import MemoryConnection

REPLY_TO = "amq.rabbitmq.reply-to"


class Callbacks:
    """A set of callbacks with ``add``/``discard``, like aio-pika's CallbackCollection."""

    def __init__(self) -> None:
        self._items: list[Callable[..., Any]] = []

    def add(self, callback: Callable[..., Any]) -> None:
        self._items.append(callback)

    def discard(self, callback: Callable[..., Any]) -> None:
        with contextlib.suppress(ValueError):
            self._items.remove(callback)

    def remove(self, callback: Callable[..., Any]) -> None:
        self._items.remove(callback)

    def __call__(self, *args: Any) -> None:
        for callback in list(self._items):
            callback(*args)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Unacked:
    queue: str
    message: Stored
    consumer: Consumer | None


class RawChannel:
    """The aiormq-level channel: declares, binds, publishes, consumes, settles."""

    def __init__(
        self,
        connection: MemoryConnection,
        number: int,
        *,
        confirms: bool,
        on_return_raises: bool = False,
    ) -> None:
        self.connection = connection
        self.on_return_raises = on_return_raises
        self.broker: MemoryBroker = connection.broker
        self.number = number
        self.confirms = confirms
        self.is_closed = False
        self.prefetch = 0
        self.consumers: dict[str, Consumer] = {}
        self.on_consumer_cancel_callbacks = Callbacks()
        self.on_return_callbacks = Callbacks()
        self._unacked: dict[int, _Unacked] = {}
        self._tags = itertools.count(1)
        self._publish_tags = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reply_token: str | None = None

    # -- errors --------------------------------------------------------------------

    def _check(self) -> None:
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")

    def _fail(self, error: BrokerError) -> aiormq.exceptions.AMQPChannelError:
        """The broker closes a channel on every channel error; so do we."""
        self._close_now()
        # The same exception, with the same arguments, as aiormq raises for the frame.
        exc = exception_by_code(Channel.Close(reply_code=error.code, reply_text=error.text))
        assert isinstance(exc, aiormq.exceptions.AMQPChannelError)
        return exc

    # -- declarations --------------------------------------------------------------

    async def exchange_declare(
        self,
        exchange: str = "",
        exchange_type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Exchange.DeclareOk:
        self._check()
        try:
            if passive:
                self.broker.exchange(exchange)
            else:
                self.broker.declare_exchange(
                    exchange,
                    exchange_type,
                    durable=durable,
                    auto_delete=auto_delete,
                    internal=internal,
                    arguments=arguments or {},
                )
        except BrokerError as exc:
            raise self._fail(exc) from None
        return Exchange.DeclareOk()

    async def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Queue.DeclareOk:
        self._check()
        try:
            if passive:
                q = self.broker.queue(queue)
            else:
                q = self.broker.declare_queue(
                    queue,
                    durable=durable,
                    exclusive=exclusive,
                    auto_delete=auto_delete,
                    arguments=arguments or {},
                    owner=self.connection,
                )
        except BrokerError as exc:
            raise self._fail(exc) from None
        return Queue.DeclareOk(q.name, q.message_count, len(q.consumers))

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Queue.BindOk:
        await self._bind(queue, "queue", exchange, routing_key, arguments)
        return Queue.BindOk()

    async def exchange_bind(
        self,
        destination: str = "",
        source: str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Exchange.BindOk:
        await self._bind(destination, "exchange", source, routing_key, arguments)
        return Exchange.BindOk()

    async def _bind(
        self,
        destination: str,
        kind: str,
        source: str,
        routing_key: str,
        arguments: dict[str, Any] | None,
    ) -> None:
        self._check()
        try:
            self.broker.bind(destination, kind, source, routing_key, arguments or {})
        except BrokerError as exc:
            raise self._fail(exc) from None

    async def queue_unbind(
        self,
        queue: str = "",
        exchange: str = "",
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Queue.UnbindOk:
        self._check()
        self.broker.unbind(queue, "queue", exchange, routing_key, arguments or {})
        return Queue.UnbindOk()

    async def queue_delete(
        self,
        queue: str = "",
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
        timeout: float | None = None,
    ) -> Queue.DeleteOk:
        self._check()
        return Queue.DeleteOk(message_count=self.broker.delete_queue(queue))

    async def queue_purge(
        self, queue: str = "", nowait: bool = False, timeout: float | None = None
    ) -> Queue.PurgeOk:
        self._check()
        try:
            return Queue.PurgeOk(message_count=self.broker.purge(queue))
        except BrokerError as exc:
            raise self._fail(exc) from None

    async def exchange_delete(
        self,
        exchange: str = "",
        if_unused: bool = False,
        nowait: bool = False,
        timeout: float | None = None,
    ) -> Exchange.DeleteOk:
        self._check()
        self.broker.delete_exchange(exchange)
        return Exchange.DeleteOk()

    # -- publishing ----------------------------------------------------------------

    async def basic_publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Basic.Properties | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        timeout: float | None = None,
    ) -> Basic.Ack | None:
        """Publish; with confirms, return ``Basic.Ack`` or raise like aiormq does.

        Raises:
            aiormq.exceptions.PublishError: a mandatory message reached no queue.
            aiormq.exceptions.DeliveryError: a reject-publish queue refused it (a nack).
            aiormq.exceptions.ChannelNotFoundEntity: no such exchange (channel closed).
        """
        self._check()
        if not self.connection.unblocked.is_set():
            # RabbitMQ holds a blocked connection's publishes until the alarm clears.
            await self.connection.unblocked.wait()
            self._check()
        props = properties or Basic.Properties()
        if props.reply_to == REPLY_TO:
            if self.reply_token is None:
                raise self._fail(
                    BrokerError(406, "PRECONDITION_FAILED - fast reply consumer does not exist")
                )
            props = copy_properties(props, reply_to=f"{REPLY_TO}.{self.reply_token}")
        tag = next(self._publish_tags)
        if exchange == "" and routing_key.startswith(REPLY_TO + "."):
            self._reply(routing_key, body, props)
            return Basic.Ack(delivery_tag=tag) if self.confirms else None
        try:
            routed = self.broker.publish(exchange, routing_key, body, props)
        except BrokerError as exc:
            raise self._fail(exc) from None
        if mandatory and not routed.queues:
            frame = Basic.Return(
                reply_code=312, reply_text="NO_ROUTE", exchange=exchange, routing_key=routing_key
            )
            returned = _delivered(frame, body, self, properties=props)
            self.on_return_callbacks(returned)
            if self.confirms and self.on_return_raises:
                raise aiormq.exceptions.PublishError(returned, frame)
        if not self.confirms:
            return None
        if routed.rejected:
            raise aiormq.exceptions.DeliveryError(None, Basic.Nack(delivery_tag=tag))
        return Basic.Ack(delivery_tag=tag)

    def _reply(self, routing_key: str, body: bytes, props: Basic.Properties) -> None:
        # Direct reply-to: straight to the requesting channel's consumer, no queue.
        target = self.broker.reply_channels.get(routing_key[len(REPLY_TO) + 1 :])
        if target is None or target.is_closed:
            return
        consumer = target.consumers.get(f"reply-{target.reply_token}")
        if consumer is None:
            return
        message = Stored(0, body, props, "", routing_key)
        target.deliver(consumer, None, message)

    # -- consuming -----------------------------------------------------------------

    async def basic_qos(
        self,
        prefetch_size: int | None = None,
        prefetch_count: int | None = None,
        global_: bool = False,
        timeout: float | None = None,
    ) -> Basic.QosOk:
        self._check()
        self.prefetch = prefetch_count or 0
        for consumer in self.consumers.values():
            consumer.prefetch = self.prefetch
        self.broker.dispatch_all()
        return Basic.QosOk()

    async def basic_consume(
        self,
        queue: str,
        consumer_callback: Callable[[Any], Any],
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
        timeout: float | None = None,
    ) -> Basic.ConsumeOk:
        self._check()
        if queue == REPLY_TO:
            if not no_ack:
                raise self._fail(
                    BrokerError(406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
                )
            self.reply_token = uuid.uuid4().hex
            self.broker.reply_channels[self.reply_token] = self
            tag = f"reply-{self.reply_token}"
            self.consumers[tag] = Consumer(tag, queue, self, consumer_callback, True, 0)
            return Basic.ConsumeOk(consumer_tag=tag)
        try:
            q = self.broker.queue(queue)
        except BrokerError as exc:
            raise self._fail(exc) from None
        if q.exclusive and q.owner is not self.connection:
            raise self._fail(
                BrokerError(
                    405,
                    f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}'",
                )
            )
        cursor = None
        if q.is_stream:
            if no_ack or not self.prefetch:
                raise self._fail(
                    BrokerError(
                        406,
                        "PRECONDITION_FAILED - consumer prefetch count is not set for "
                        f"'queue '{queue}' in vhost '{self.broker.name}''"
                        if not no_ack
                        else "PRECONDITION_FAILED - consumer with no ack on a stream",
                    )
                )
            try:
                cursor = start_cursor(q, (arguments or {}).get(STREAM_OFFSET))
            except BrokerError as exc:
                raise self._fail(exc) from None
        tag = consumer_tag or f"ctag{self.number}.{uuid.uuid4().hex}"
        consumer = Consumer(tag, queue, self, consumer_callback, no_ack, self.prefetch)
        consumer.cursor = cursor
        self.consumers[tag] = consumer
        q.consumers.append(consumer)
        self.broker.dispatch(q)
        return Basic.ConsumeOk(consumer_tag=tag)

    async def basic_cancel(
        self, consumer_tag: str, *, nowait: bool = False, timeout: float | None = None
    ) -> Basic.CancelOk:
        self._check()
        self._remove_consumer(consumer_tag)
        return Basic.CancelOk(consumer_tag=consumer_tag)

    def _remove_consumer(self, tag: str) -> None:
        consumer = self.consumers.pop(tag, None)
        if consumer is None:
            return
        q = self.broker.queues.get(consumer.queue)
        if q is None:
            return
        with contextlib.suppress(ValueError):
            q.consumers.remove(consumer)
        if q.auto_delete and not q.consumers:
            self.broker.delete_queue(q.name)
        else:
            # Under single active consumer, the next consumer takes over.
            self.broker.dispatch(q)

    def broker_cancelled(self, tag: str) -> None:
        """The queue was deleted: drop the consumer and tell the client (Basic.Cancel)."""
        if self.consumers.pop(tag, None) is not None:
            self.on_consumer_cancel_callbacks(Basic.Cancel(consumer_tag=tag))

    async def basic_get(
        self, queue: str = "", no_ack: bool = False, timeout: float | None = None
    ) -> DeliveredMessage:
        self._check()
        try:
            q = self.broker.queue(queue)
        except BrokerError as exc:
            raise self._fail(exc) from None
        self.broker.expire_all()
        if not q.ready:
            return _delivered(
                Basic.GetEmpty(),
                b"",
                self,
            )
        message = q.ready.pop(0)
        tag = next(self._tags)
        if not no_ack:
            self._unacked[tag] = _Unacked(q.name, message, None)
            q.unacked += 1
        frame = Basic.GetOk(
            delivery_tag=tag,
            redelivered=message.redelivered,
            exchange=message.exchange,
            routing_key=message.routing_key,
            message_count=len(q.ready),
        )
        props = self.broker.delivered_properties(q, message)
        return _delivered(frame, message.body, self, properties=props)

    def deliver(self, consumer: Consumer, queue: MemoryQueue | None, message: Stored) -> None:
        """Hand a message to a consumer's callback, in a task of its own (as aiormq)."""
        tag = next(self._tags)
        if not consumer.no_ack and queue is not None:
            self._unacked[tag] = _Unacked(queue.name, message, consumer)
            consumer.unacked += 1
            queue.unacked += 1
        frame = Basic.Deliver(
            consumer_tag=consumer.tag,
            delivery_tag=tag,
            redelivered=message.redelivered,
            exchange=message.exchange,
            routing_key=message.routing_key,
        )
        props = (
            message.properties
            if queue is None
            else self.broker.delivered_properties(queue, message)
        )
        delivered = _delivered(frame, message.body, self, properties=props)
        self.broker.delivering += 1
        task = asyncio.get_running_loop().create_task(self._run(consumer, delivered))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, consumer: Consumer, message: DeliveredMessage) -> None:
        try:
            await consumer.callback(message)
        finally:
            self.broker.delivering -= 1

    # -- settling ------------------------------------------------------------------

    def _settle(self, tag: int, multiple: bool) -> list[_Unacked]:
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        tags = [t for t in self._unacked if t <= tag] if multiple else [tag]
        out = []
        for t in tags:
            entry = self._unacked.pop(t, None)
            if entry is None:
                raise self._fail(
                    BrokerError(406, f"PRECONDITION_FAILED - unknown delivery tag {t}")
                )
            if entry.consumer is not None:
                entry.consumer.unacked -= 1
            q = self.broker.queues.get(entry.queue)
            if q is not None:
                q.unacked -= 1
            out.append(entry)
        return out

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        entries = self._settle(delivery_tag, multiple)
        for entry in entries:
            self._dispatch(entry.queue)

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        entries = self._settle(delivery_tag, multiple)
        for entry in entries:
            q = self.broker.queues.get(entry.queue)
            if q is None:
                continue
            if requeue:
                self.broker.requeue(q.name, [entry.message])
            else:
                self.broker.dead_letter(q, entry.message, "rejected")
                self.broker.dispatch(q)

    async def basic_reject(
        self, delivery_tag: int, *, requeue: bool = True, wait: bool = True
    ) -> None:
        await self.basic_nack(delivery_tag, requeue=requeue)

    def _dispatch(self, queue: str) -> None:
        q = self.broker.queues.get(queue)
        if q is not None:
            self.broker.dispatch(q)

    # -- closing -------------------------------------------------------------------

    def _close_now(self) -> None:
        """Close: consumers go away and every unacked message returns to its queue,
        marked redelivered, in its original place."""
        if self.is_closed:
            return
        self.is_closed = True
        # aiormq cancels the delivery tasks of a channel that closes.
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for tag in list(self.consumers):
            self._remove_consumer(tag)
        if self.reply_token is not None:
            self.broker.reply_channels.pop(self.reply_token, None)
        unacked, self._unacked = self._unacked, {}
        by_queue: dict[str, list[Stored]] = {}
        for entry in unacked.values():
            if entry.consumer is not None:
                entry.consumer.unacked -= 1
            q = self.broker.queues.get(entry.queue)
            if q is not None:
                q.unacked -= 1
            by_queue.setdefault(entry.queue, []).append(entry.message)
        for queue, messages in by_queue.items():
            self.broker.requeue(queue, messages)
        self.connection.channels.discard(self)

    async def close(self, exc: BaseException | None = None) -> None:
        self._close_now()


def _delivered(
    frame: Any,
    body: bytes,
    channel: RawChannel,
    *_: Any,
    properties: Basic.Properties | None = None,
    **__: Any,
) -> DeliveredMessage:
    """A delivery as aiormq hands it to consumers (typed against aiormq's channel, whose
    interface `RawChannel` provides where rabbitflow uses it)."""
    header = ContentHeader(body_size=len(body), properties=properties or Basic.Properties())
    return DeliveredMessage(
        delivery=frame, header=header, body=body, channel=cast(AbstractChannel, channel)
    )
