"""Trace context across the broker with ``rabbitflow[otel]``, and nothing without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from rabbitflow import App, Batch, BatchFailure, Message
from rabbitflow.topology import load_text
from tests.helpers import drain, wait_for

pytestmark = pytest.mark.broker

TOPOLOGY = """
version: 1
exchanges:
  orders: {type: topic}
queues:
  work:
    bind: [{exchange: orders, routing_key: "order.*"}]
    retry: {max_retries: 1, delay: 50ms}
"""
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A global tracer provider exporting to memory, for this test only.

    OpenTelemetry lets a process set its provider once; its own test utilities reset
    these private globals the same way, so later tests publish without a trace context.
    """
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


async def test_producer_and_consumer_spans_are_linked_across_a_retry(
    spans: InMemorySpanExporter, amqp_url: str, channel: Any
) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    seen: list[tuple[str, int, str]] = []
    inner = trace.get_tracer("test")

    @app.handler("work")
    async def handle(body: dict[str, Any], message: Message) -> None:
        seen.append((body["kind"], message.attempt, str(message.headers.get("traceparent"))))
        with inner.start_as_current_span("charge card"):
            if body["kind"] == "broken" or message.attempt == 1:
                raise RuntimeError("card service down")

    async with app:
        await app.publish("orders", "order.placed", {"kind": "flaky"})
        await app.publish("orders", "order.placed", {"kind": "broken"})
        await wait_for(lambda: len(seen) == 4, timeout=10, message="4 runs")
        await wait_for(
            lambda: (
                len([s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]) == 4
            ),
            timeout=5,
        )

    finished = spans.get_finished_spans()
    producers = [s for s in finished if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert [p.name for p in producers] == ["send orders", "send orders"]
    for producer, kind in zip(producers, ("flaky", "broken"), strict=True):
        ctx = producer.get_span_context()
        attempts = [
            c for c in consumers if c.parent is not None and c.parent.span_id == ctx.span_id
        ]
        assert len(attempts) == 2, kind  # both attempts are children of the publish
        for c in attempts:
            assert c.get_span_context().trace_id == ctx.trace_id
            assert c.name == "process work"
            assert [link.context.span_id for link in c.links] == [ctx.span_id]
        outcomes = sorted((c.attributes or {})["rabbitflow.outcome"] for c in attempts)
        assert sorted((c.attributes or {})["rabbitflow.attempt"] for c in attempts) == [1, 2]
        assert outcomes == (["ack", "retry"] if kind == "flaky" else ["dead_letter", "retry"])
        # every run saw the publish's own traceparent: the retry copy kept the header
        headers = {h for k, _, h in seen if k == kind}
        assert len(headers) == 1
        assert f"{ctx.trace_id:032x}-{ctx.span_id:016x}" in headers.pop()
    # the handler's own spans nest in the consumer span
    charges = [s for s in finished if s.name == "charge card"]
    consumer_ids = {c.get_span_context().span_id for c in consumers}
    assert len(charges) == 4
    assert all(s.parent is not None and s.parent.span_id in consumer_ids for s in charges)
    # the dead letter keeps the header too
    dead = await drain(channel, "work.dlq")
    assert len(dead) == 1
    broken = producers[1].get_span_context()
    assert f"{broken.span_id:016x}" in str(dead[0].headers["traceparent"])


async def test_a_sync_handler_runs_in_the_consumer_span(
    spans: InMemorySpanExporter, amqp_url: str
) -> None:
    app = App(load_text(TOPOLOGY), url=amqp_url)
    inner = trace.get_tracer("test")
    done: list[int] = []

    @app.handler("work")
    def handle(body: dict[str, Any]) -> None:  # a plain def: runs in a worker thread
        with inner.start_as_current_span("sync work"):
            done.append(1)

    async with app:
        await app.publish("orders", "order.placed", {"kind": "ok"})
        await wait_for(lambda: done == [1], timeout=10)
        await wait_for(
            lambda: any(s.kind is SpanKind.CONSUMER for s in spans.get_finished_spans()), timeout=5
        )
    finished = spans.get_finished_spans()
    [consumer] = [s for s in finished if s.kind is SpanKind.CONSUMER]
    [work] = [s for s in finished if s.name == "sync work"]
    assert work.parent is not None
    assert work.parent.span_id == consumer.get_span_context().span_id


async def test_a_batch_run_is_one_consumer_span_linked_to_each_publish(
    spans: InMemorySpanExporter, amqp_url: str
) -> None:
    """Three messages in one batch, the second failing once: one span for the batch
    (linked to the three publishes, the handler's spans inside it, outcomes counted),
    then one for the retried message alone."""
    app = App(load_text(TOPOLOGY), url=amqp_url)
    inner = trace.get_tracer("test")
    runs: list[list[int]] = []

    @app.handler("work", batch=Batch(max_size=3, max_wait="5s"))
    async def handle(bodies: list[dict[str, Any]], messages: list[Message]) -> None:
        runs.append([b["n"] for b in bodies])
        with inner.start_as_current_span("insert rows"):
            if len(runs) == 1:
                raise BatchFailure({1: RuntimeError("row refused")})

    async with app:
        for n in range(3):
            await app.publish("orders", "order.placed", {"n": n})
        await wait_for(lambda: len(runs) == 2, timeout=15, message="the batch and its retry")
        await wait_for(
            lambda: (
                len([s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]) == 2
            ),
            timeout=5,
        )
    assert runs == [[0, 1, 2], [1]]
    finished = spans.get_finished_spans()
    producers = [s for s in finished if s.kind is SpanKind.PRODUCER]
    first, retried = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert first.name == "process work"
    attributes = dict(first.attributes or {})
    assert attributes["messaging.batch.message_count"] == 3
    assert attributes["rabbitflow.outcome"] == "mixed"
    assert (attributes["rabbitflow.outcomes.ack"], attributes["rabbitflow.outcomes.retry"]) == (
        2,
        1,
    )
    assert first.parent is None  # its messages come from three traces
    assert {link.context.span_id for link in first.links} == {
        p.get_span_context().span_id for p in producers
    }
    assert [e.name for e in first.events] == ["exception"]  # the refused row
    [insert, _] = [s for s in finished if s.name == "insert rows"]
    assert insert.parent is not None
    assert insert.parent.span_id == first.get_span_context().span_id
    again = dict(retried.attributes or {})
    assert (again["messaging.batch.message_count"], again["rabbitflow.outcome"]) == (1, "ack")
    [link] = retried.links
    assert link.context.span_id == producers[1].get_span_context().span_id


NO_OTEL = textwrap.dedent("""
    import asyncio, json, sys
    sys.modules["opentelemetry"] = None  # as if rabbitflow[otel] were not installed
    from rabbitflow import App, Batch, BatchFailure, Message
    from rabbitflow.topology import load_text

    async def main(url):
        app = App(load_text("version: 1\\nqueues: {work: {}}\\n"), url=url)
        got = []

        @app.handler("work")
        async def handle(body: dict, message: Message) -> None:
            got.append(dict(message.headers))

        async with app:
            await app.publish("", "work", {"n": 1})
            for _ in range(500):
                if got:
                    break
                await asyncio.sleep(0.01)
        loaded = sorted(m for m in sys.modules
                        if m.startswith("opentelemetry") and sys.modules[m] is not None)
        print(json.dumps({"headers": got, "loaded": loaded}))

    asyncio.run(main(sys.argv[1]))
""")


def test_without_the_extra_nothing_is_imported_and_no_header_added(amqp_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_OTEL, amqp_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["headers"] == [{}]
    assert report["loaded"] == []
