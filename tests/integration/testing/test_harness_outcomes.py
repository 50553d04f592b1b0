"""The harness reports what the worker did, read from the settle step: where the worker
falls back (a delay queue gone, so the retry is dead-lettered) or refuses before the
handler (a middleware's Reject, a duplicate), the harness says so instead of guessing."""

from __future__ import annotations

from typing import Any

from rabbitflow import App, MemoryStore, Message, Reject
from rabbitflow.testing import run_app
from rabbitflow.topology.loader import load_text
from rabbitflow.worker.pipeline import CallNext

TOPOLOGY = """
version: 1
queues:
  work:
    retry: {max_retries: 2, delays: [5s]}
"""


async def test_a_retry_whose_delay_queue_is_gone_is_reported_as_dead_lettered(
    memory_url: str,
) -> None:
    app = App(load_text(TOPOLOGY))

    @app.handler("work")
    async def work(body: Any) -> None:
        raise RuntimeError("fails")

    async with run_app(app, memory_url) as h:
        assert h.broker is not None
        h.broker.delete_queue("work.retry.5s")  # someone deleted the delay queue
        await h.publish("", "work", {"n": 1})
        await h.wait_idle()
        dead = await h.dead_letters("work")
    # Re-deciding from the exception alone would have said "retry".
    assert [c.outcome for c in h.calls_of("work")] == ["dead_letter"]
    assert [d.error for d in dead] == ["RuntimeError: fails"]


async def test_runs_a_middleware_refused_and_duplicates_are_no_calls(memory_url: str) -> None:
    app = App(load_text(TOPOLOGY))

    @app.middleware
    async def gate(message: Message, call_next: CallNext) -> Any:
        if message.headers.get("blocked"):
            raise Reject("blocked")
        return await call_next(message)

    @app.handler("work", idempotency=MemoryStore())
    async def work(body: Any) -> None: ...

    async with run_app(app, memory_url) as h:
        await h.publish("", "work", {"n": 1}, headers={"blocked": True})
        await h.publish("", "work", {"n": 2}, message_id="same")
        await h.publish("", "work", {"n": 3}, message_id="same")
        await h.wait_idle()
        dead = await h.dead_letters("work")
    assert [(c.body, c.outcome) for c in h.calls_of("work")] == [({"n": 2}, "ack")]
    assert [d.error for d in dead] == ["Reject: blocked"]
