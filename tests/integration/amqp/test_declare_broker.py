"""declare against the real broker: idempotence, conflicts, worker-owned queues."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.connection import connect
from rabbitflow.amqp.declare import DeclareFailed, Status, conflicts, declare
from rabbitflow.topology import load_text
from rabbitflow.topology.expand import BindingDecl, Declarations, ExchangeDecl, QueueDecl, expand

pytestmark = pytest.mark.broker

TOPOLOGY = """\
version: 1
exchanges:
  orders: {type: topic, alternate_exchange: orders.unrouted}
  orders.unrouted: {type: fanout}
queues:
  payments.charge:
    type: quorum
    bind: [{exchange: orders, routing_key: order.placed}]
    retry: {max_retries: 2, delay: 100ms}
  replies:
    exclusive: true
    bind: [{exchange: orders, routing_key: reply.#}]
"""


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractConnection]:
    conn = await connect(amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_declaring_twice_creates_then_finds_everything(
    connection: AbstractConnection,
) -> None:
    decls = expand(load_text(TOPOLOGY))

    first = await declare(connection, decls)
    second = await declare(connection, decls)

    objects = [(r.kind, r.name) for r in first if r.kind != "binding"]
    assert objects == [
        ("exchange", "orders"),
        ("exchange", "orders.unrouted"),
        ("exchange", "payments.charge.dlx"),
        ("queue", "payments.charge"),
        ("queue", "payments.charge.retry.100ms"),
        ("queue", "payments.charge.retry.200ms"),
        ("queue", "payments.charge.dlq"),
        ("queue", "replies"),
    ]
    assert {r.name: r.status for r in first if r.kind != "binding"} == {
        **{name: Status.CREATED for _, name in objects},
        "replies": Status.SKIPPED,
    }
    assert {r.name: r.status for r in second if r.kind != "binding"} == {
        **{name: Status.EXISTS for _, name in objects},
        "replies": Status.SKIPPED,
    }
    bindings = {r.name: r.status for r in second if r.kind == "binding"}
    assert bindings == {
        "orders -> payments.charge [order.placed]": Status.BOUND,
        "payments.charge.dlx -> payments.charge.dlq": Status.BOUND,
        "orders -> replies [reply.#]": Status.SKIPPED,
    }


async def test_a_worker_declares_its_exclusive_queues_too(
    connection: AbstractConnection,
) -> None:
    results = await declare(connection, expand(load_text(TOPOLOGY)), include_worker_owned=True)
    assert {r.name: r.status for r in results}["replies"] is Status.CREATED
    channel = await connection.channel()
    await channel.declare_queue("replies", passive=True)  # exists, on this connection


async def test_every_conflict_is_reported_and_the_rest_declared(
    connection: AbstractConnection, vhost: str
) -> None:
    channel = await connection.channel()
    await channel.declare_queue("jobs", durable=True)  # classic, where the file says quorum
    await channel.declare_queue("audit", durable=True, arguments={"x-message-ttl": 1000})
    await channel.close()
    text = TOPOLOGY + "  jobs: {type: quorum}\n  audit: {message_ttl: 2s}\n"

    results = await declare(connection, expand(load_text(text)))

    found = conflicts(results)
    assert [str(c) for c in found] == [
        f"vhost {vhost!r}: queue 'jobs' exists with x-queue-type=(not set), the "
        "files declare x-queue-type='quorum'; delete it or align the files",
        f"vhost {vhost!r}: queue 'audit' exists with x-message-ttl=1000, the files declare "
        "x-message-ttl=2000; delete it or align the files",
    ]
    # Declaring went on after the first conflict.
    statuses = {r.name: r.status for r in results if r.kind == "queue"}
    assert statuses["payments.charge.dlq"] is Status.CREATED
    assert statuses["audit"] is Status.CONFLICT


async def test_an_exchange_of_another_type_is_a_conflict(
    connection: AbstractConnection, vhost: str
) -> None:
    channel = await connection.channel()
    await channel.declare_exchange("orders", aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.close()

    (conflict,) = conflicts(await declare(connection, expand(load_text(TOPOLOGY))))

    assert (conflict.vhost, conflict.kind, conflict.name) == (vhost, "exchange", "orders")
    assert (conflict.argument, conflict.existing, conflict.declared) == ("type", "direct", "topic")


async def test_a_binding_the_broker_refuses_is_one_clear_error(
    connection: AbstractConnection, vhost: str
) -> None:
    decls = Declarations((), (QueueDecl("q"),), (BindingDecl("missing", "q"),))
    with pytest.raises(DeclareFailed) as caught:
        await declare(connection, decls)
    assert str(caught.value) == (
        f"vhost {vhost!r}: cannot declare binding 'missing -> q': NOT_FOUND - no exchange "
        f"'missing' in vhost '{vhost}'"
    )


async def test_an_unknown_exchange_type_closing_the_connection_is_one_clear_error(
    connection: AbstractConnection, vhost: str
) -> None:
    decls = Declarations((ExchangeDecl("e", "x-no-such-plugin"),), (), ())
    with pytest.raises(DeclareFailed) as caught:
        await declare(connection, decls)
    assert str(caught.value) == (
        f"vhost {vhost!r}: cannot declare exchange 'e': COMMAND_INVALID - unknown exchange "
        "type 'x-no-such-plugin' (the broker closed the connection)"
    )
