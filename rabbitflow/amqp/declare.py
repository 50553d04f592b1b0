"""TEMPORARY minimal declarer (replaced by the foundation branch's)."""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika.abc import AbstractConnection

from rabbitflow.topology.expand import Declarations


@dataclass(frozen=True)
class DeclareResult:
    kind: str
    name: str
    status: str


async def declare(connection: AbstractConnection, decls: Declarations, *,
                  include_worker_owned: bool = False) -> list[DeclareResult]:
    ch = await connection.channel()
    out = []
    try:
        for e in decls.exchanges:
            await ch.declare_exchange(e.name, e.type, durable=e.durable,
                                      auto_delete=e.auto_delete, internal=e.internal,
                                      arguments=dict(e.arguments))
            out.append(DeclareResult("exchange", e.name, "created"))
        for q in decls.queues:
            if q.worker_owned and not include_worker_owned:
                continue
            await ch.declare_queue(q.name, durable=q.durable, exclusive=q.exclusive,
                                   auto_delete=q.auto_delete, arguments=dict(q.arguments))
            out.append(DeclareResult("queue", q.name, "created"))
        for b in decls.bindings:
            if b.destination_type == "queue":
                await (await ch.get_underlay_channel()).queue_bind(
                    b.destination, b.source, routing_key=b.routing_key,
                    arguments=dict(b.arguments))
            else:
                await (await ch.get_underlay_channel()).exchange_bind(
                    b.destination, b.source, routing_key=b.routing_key,
                    arguments=dict(b.arguments))
    finally:
        await ch.close()
    return out
