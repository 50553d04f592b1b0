"""An AsyncAPI 3.0 document for a topology (DESIGN.md §10).

Exchanges and queues (generated retry and dead-letter ones included) are channels with
AMQP channel bindings (bindingVersion 0.3.0); every binding is a ``send`` operation on its
exchange with the routing key in the AMQP ``cc`` binding; every handler is a ``receive``
operation on its queue whose message payload is the JSON Schema of its body type
(pydantic); retries and dead letters are ``send`` operations describing where a failed
message goes. The tests parse the result with the official parser (@asyncapi/parser).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter

from rabbitflow import headers as dlq_headers
from rabbitflow.topology.expand import (
    BindingDecl,
    Declarations,
    ExchangeDecl,
    QueueDecl,
    Role,
    dead_letter_route,
    physical_queues,
    retry_delays,
)
from rabbitflow.topology.schema import Topology, retry_queue_name
from rabbitflow.units import format_duration

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING = "0.3.0"
_AMQP_EXCHANGE_TYPES = {"topic", "direct", "fanout", "headers"}
_ID = re.compile(r"[^A-Za-z0-9._-]+")
ANY_MESSAGE = "AnyMessage"
DEAD_LETTER_MESSAGE = "DeadLetter"
Document = dict[str, Any]


@dataclass(frozen=True)
class HandlerDoc:
    """What the document says of one handler."""

    queue: str
    name: str
    body: Any
    """The body parameter's type; None for no body, `inspect.Parameter.empty` for any JSON."""
    prefetch: int
    timeout: float | None = None
    description: str | None = None


@dataclass(frozen=True)
class Server:
    """The broker the document names (host:port and vhost; never credentials)."""

    host: str
    vhost: str = "/"


def _id(text: str) -> str:
    return _ID.sub("_", text) or "_"


def channel_id(kind: str, name: str) -> str:
    """``exchange.orders`` / ``queue.payments.charge``: ids AsyncAPI accepts as keys."""
    return f"{kind}.{_id(name)}"


class _Builder:
    def __init__(self, topology: Topology, decls: Declarations, vhost: str) -> None:
        self.topology = topology
        self.decls = decls
        self.vhost = vhost
        self.channels: dict[str, Document] = {}
        self.operations: dict[str, Document] = {}
        self.messages: dict[str, Document] = {
            ANY_MESSAGE: {
                "name": ANY_MESSAGE,
                "title": "Any message",
                "summary": "A message whose body the topology files do not describe.",
                "payload": {},
            },
            DEAD_LETTER_MESSAGE: _dead_letter_message(),
        }
        self.schemas: dict[str, Any] = {}

    # -- channels ------------------------------------------------------------------
    def exchange(self, e: ExchangeDecl) -> None:
        binding: Document = {"name": e.name, "durable": e.durable, "autoDelete": e.auto_delete}
        if e.type in _AMQP_EXCHANGE_TYPES:
            binding["type"] = e.type
        binding["vhost"] = self.vhost
        text = f"{e.type} exchange {e.name!r}"
        if e.role is Role.DEAD_LETTER:
            text = f"dead-letter exchange of queue {e.owner!r}: {text}"
        elif e.role is Role.PARTITION:
            text = f"spreads queue {e.owner!r} over its partitions: {text}"
        if "alternate-exchange" in e.arguments:
            text += f"; messages no binding takes go to {e.arguments['alternate-exchange']!r}"
        self.channels[channel_id("exchange", e.name)] = {
            "address": e.name,
            "title": e.name,
            "description": text,
            "messages": {"any": {"$ref": f"#/components/messages/{ANY_MESSAGE}"}},
            "bindings": {
                "amqp": {"is": "routingKey", "exchange": binding, "bindingVersion": AMQP_BINDING}
            },
        }

    def queue(self, q: QueueDecl) -> None:
        text = f"queue {q.name!r}"
        if q.role is Role.RETRY:
            ttl = format_duration(int(q.arguments.get("x-message-ttl", 0)))
            text = (
                f"delay queue of {q.owner!r}: nobody consumes it; after {ttl} the broker "
                f"dead-letters each message back to {q.owner!r} through the default exchange"
            )
        elif q.role is Role.DEAD_LETTER:
            text = f"dead letters of queue {q.owner!r}, kept for `rabbitflow dlq` to list or replay"
        if q.arguments:
            text += " (arguments: " + ", ".join(f"{k}={v}" for k, v in q.arguments.items()) + ")"
        message = DEAD_LETTER_MESSAGE if q.role is Role.DEAD_LETTER else ANY_MESSAGE
        self.channels[channel_id("queue", q.name)] = {
            "address": q.name,
            "title": q.name,
            "description": text,
            "messages": {_key(message): {"$ref": f"#/components/messages/{message}"}},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": q.name,
                        "durable": q.durable,
                        "exclusive": q.exclusive,
                        "autoDelete": q.auto_delete,
                        "vhost": self.vhost,
                    },
                    "bindingVersion": AMQP_BINDING,
                }
            },
        }

    def add_message(self, channel: str, message: str) -> str:
        """Make ``message`` one of the channel's messages; the reference to it there."""
        self.channels[channel]["messages"][_key(message)] = {
            "$ref": f"#/components/messages/{message}"
        }
        return f"#/channels/{channel}/messages/{_key(message)}"

    # -- operations ----------------------------------------------------------------
    def binding(self, b: BindingDecl, index: int) -> None:
        channel = channel_id("exchange", b.source)
        if channel not in self.channels:  # a built-in exchange (amq.*)
            return
        dest = f"{b.destination_type} {b.destination!r}"
        text = f"Publish to {b.source!r} with routing key {b.routing_key!r}: routed to {dest}"
        if b.arguments:
            text = f"Publish to {b.source!r} matching {dict(b.arguments)}: routed to {dest}"
        amqp: Document = {"bindingVersion": AMQP_BINDING}
        if b.routing_key:
            amqp["cc"] = [b.routing_key]
        self.operations[f"route.{index}.{_id(b.source)}.{_id(b.destination)}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "title": f"{b.source} -> {b.destination}",
            "summary": text,
            "messages": [{"$ref": self.add_message(channel, ANY_MESSAGE)}],
            "bindings": {"amqp": amqp},
        }

    def handler(self, h: HandlerDoc, payload: Any) -> None:
        message = f"{_id(h.queue)}.body"
        body: Document = {
            "name": message,
            "title": f"body of {h.queue}",
            "contentType": "application/json",
            "headers": _attempt_headers(),
        }
        if payload is not None:
            body["payload"] = payload
        self.messages[message] = body
        declared = self.topology.queues.get(h.queue)
        for queue in physical_queues(self.topology, h.queue):
            channel = channel_id("queue", queue)
            if channel not in self.channels:
                continue
            text = f"Handler {h.name} (prefetch {h.prefetch}"
            text += f", timeout {h.timeout:g}s)" if h.timeout else ")"
            if declared is not None:
                text += ". " + _failure_path(h.queue, declared)
            if h.description:
                text += "\n\n" + h.description
            self.operations[f"receive.{_id(queue)}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{h.name} consumes {queue}",
                "description": text,
                "messages": [{"$ref": self.add_message(channel, message)}],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
            }

    def failure_paths(self, name: str) -> None:
        queue = self.topology.queues[name]
        schedule = (
            ", ".join(format_duration(d) for d in queue.retry.schedule) if queue.retry else ""
        )
        for part in physical_queues(self.topology, name):
            for n, delay in enumerate(retry_delays(queue), start=1):
                retry = retry_queue_name(part, delay)
                channel = channel_id("queue", retry)
                if channel not in self.channels:
                    continue
                self.operations[f"retry.{_id(retry)}"] = {
                    "action": "send",
                    "channel": {"$ref": f"#/channels/{channel}"},
                    "title": f"retry {part} after {format_duration(delay)}",
                    "description": (
                        f"A failed delivery of {part!r} whose next retry waits "
                        f"{format_duration(delay)} is published here (with "
                        f"{dlq_headers.ATTEMPT} incremented) and acked; after the TTL the "
                        f"broker moves it back to {part!r}. Delay tier {n} of the schedule "
                        f"{schedule}."
                    ),
                    "messages": [{"$ref": self.add_message(channel, ANY_MESSAGE)}],
                }
        route = dead_letter_route(name, queue)
        if route is None:
            return
        exchange, key = route
        channel = channel_id("exchange", exchange)
        if channel not in self.channels:
            return
        self.operations[f"deadLetter.{_id(name)}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "title": f"dead-letter {name}",
            "description": (
                f"After its last retry (or a Reject), a message of {name!r} is published to "
                f"{exchange!r} with routing key {key!r} and the {dlq_headers.ERROR} "
                "headers; messages the broker dead-letters itself (expired, over a limit) "
                "arrive there too, with x-death."
            ),
            "messages": [{"$ref": self.add_message(channel, DEAD_LETTER_MESSAGE)}],
            "bindings": {"amqp": {"cc": [key], "bindingVersion": AMQP_BINDING}},
        }


def to_asyncapi(
    topology: Topology,
    declarations: Declarations,
    *,
    vhost: str = "/",
    handlers: Sequence[HandlerDoc] = (),
    title: str = "rabbitflow topology",
    server: Server | None = None,
    description: str | None = None,
) -> Document:
    """The AsyncAPI 3.0 document of a topology and (optionally) an app's handlers."""
    b = _Builder(topology, declarations, vhost)
    for e in declarations.exchanges:
        b.exchange(e)
    for q in declarations.queues:
        b.queue(q)
    for i, binding in enumerate(declarations.bindings):
        b.binding(binding, i)
    payloads, defs = body_schemas(handlers)
    b.schemas.update(defs)
    for h in handlers:
        b.handler(h, payloads.get(h.queue))
    for name in topology.queues:
        b.failure_paths(name)
    document: Document = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": "1.0.0",
            "description": description
            or "Generated by `rabbitflow export --format asyncapi` from the topology files.",
        },
        "defaultContentType": "application/json",
    }
    if server is not None:
        document["servers"] = {
            "rabbitmq": {
                "host": server.host,
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/" + server.vhost.lstrip("/") if server.vhost != "/" else "/",
            }
        }
    document["channels"] = b.channels
    document["operations"] = b.operations
    components: Document = {"messages": b.messages}
    if b.schemas:
        components["schemas"] = b.schemas
    document["components"] = components
    return document


def body_schemas(handlers: Iterable[HandlerDoc]) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON Schemas of the handlers' bodies: (queue -> payload, shared definitions).

    Definitions are referenced as ``#/components/schemas/NAME`` so that they resolve
    inside the AsyncAPI document; pydantic names them apart when two differ.
    """
    wanted = [h for h in handlers if h.body is not None]
    mode: Literal["validation"] = "validation"
    adapters = [
        (h.queue, mode, TypeAdapter(Any if h.body is inspect.Parameter.empty else h.body))
        for h in wanted
    ]
    if not adapters:
        return {}, {}
    schemas, defs = TypeAdapter.json_schemas(adapters, ref_template="#/components/schemas/{model}")
    return {queue: schemas[(queue, mode)] for queue, _, _ in adapters}, dict(defs.get("$defs", {}))


def _failure_path(name: str, queue: Any) -> str:
    retry = queue.retry
    parts = []
    if retry is not None and retry.max_retries:
        delays = ", ".join(format_duration(d) for d in retry.schedule)
        parts.append(f"A failure is retried up to {retry.max_retries} times (after {delays})")
    route = dead_letter_route(name, queue)
    if route is not None:
        parts.append(f"then dead-lettered to exchange {route[0]!r} (routing key {route[1]!r})")
    else:
        parts.append("then dropped (no dead letters)")
    return "; ".join(parts) + "."


def _key(message: str) -> str:
    return _id(message)


def _attempt_headers() -> Document:
    return {
        "type": "object",
        "properties": {
            dlq_headers.ATTEMPT: {
                "type": "integer",
                "minimum": 1,
                "description": "Delivery attempt; set by rabbitflow on retried messages.",
            }
        },
    }


def _dead_letter_message() -> Document:
    text = {"type": "string"}
    return {
        "name": DEAD_LETTER_MESSAGE,
        "title": "Dead letter",
        "summary": "A message that failed for good, with rabbitflow's error headers.",
        "headers": {
            "type": "object",
            "properties": {
                dlq_headers.ATTEMPT: {"type": "integer", "minimum": 1},
                dlq_headers.QUEUE: {**text, "description": "The work queue it failed in."},
                dlq_headers.ERROR: {**text, "description": "The exception, as type: message."},
                dlq_headers.FAILED_AT: {**text, "format": "date-time"},
                dlq_headers.ORIGINAL_EXCHANGE: text,
                dlq_headers.ORIGINAL_ROUTING_KEY: text,
                "x-death": {
                    "type": "array",
                    "description": "Set by the broker when it dead-lettered the message itself.",
                },
            },
        },
        "payload": {},
    }
