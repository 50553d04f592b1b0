"""Retry schedules are computed in closed form: never materialised, never overflowing."""

from __future__ import annotations

import time

import pytest

from rabbitflow.topology import load_text
from rabbitflow.topology.expand import expand, retry_delays
from rabbitflow.topology.schedule import delay_queue_count, distinct_delays, longest_delay
from rabbitflow.topology.schema import RetryPolicy
from rabbitflow.worker.outcome import Action, decide


def policy(**kw: object) -> RetryPolicy:
    return RetryPolicy.model_validate(kw)


@pytest.mark.parametrize(
    ("kw", "delays"),
    [
        ({"max_retries": 4, "delay": "200ms", "max_delay": "1s"}, [200, 400, 800, 1000]),
        ({"max_retries": 10_000, "max_delay": "1s"}, [1000]),
        ({"max_retries": 1_000_000_000, "backoff": "fixed"}, [1000]),
        (
            {"max_retries": 1_000_000_000, "backoff": "linear", "max_delay": "3s"},
            [1000, 2000, 3000],
        ),
        ({"max_retries": 5, "delays": ["1s", "10s", "1s"]}, [1000, 10_000]),
        ({"max_retries": 0}, []),
        ({"max_retries": 5, "multiplier": 0.5}, [1000, 500, 250, 125, 62]),
    ],
)
def test_distinct_delays_match_the_materialised_schedule(
    kw: dict[str, object], delays: list[int]
) -> None:
    p = policy(**kw)
    assert distinct_delays(p) == delays
    if p.max_retries <= 10_000:
        assert distinct_delays(p) == list(dict.fromkeys(p.schedule))


def test_a_huge_schedule_is_computed_at_once() -> None:
    started = time.process_time()  # CPU time: load does not inflate it
    p = policy(max_retries=1_000_000_000, backoff="linear", delay="1s", max_delay="10m")
    assert delay_queue_count(p) == 600
    assert len(distinct_delays(p)) == 101  # stops one past the limit
    assert longest_delay(p) == (1_000_000_000, 600_000)
    assert time.process_time() - started < 1


def test_exponential_delays_never_overflow() -> None:
    p = policy(max_retries=10_000)
    assert p.delay_for(10_000) >= 2**64  # no OverflowError, beyond any broker limit
    assert policy(max_retries=10_000, max_delay="1s").delay_for(10_000) == 1000


def test_the_worker_decides_a_late_retry_without_overflow() -> None:
    p = policy(max_retries=10_000, max_delay="1s")
    decision = decide(RuntimeError("x"), attempt=9_999, retry=p, dead_letters=True)
    assert (decision.action, decision.delay_ms) == (Action.RETRY, 1000)


def test_expand_declares_one_delay_queue_for_a_billion_fixed_retries() -> None:
    text = (
        "version: 1\nqueues:\n  jobs:\n"
        "    retry: {max_retries: 1000000000, backoff: fixed, delay: 5s}\n"
    )
    started = time.process_time()  # CPU time: load does not inflate it
    topology = load_text(text)
    names = [q.name for q in expand(topology).queues]
    assert names == ["jobs", "jobs.retry.5s", "jobs.dlq"]
    assert retry_delays(topology.queues["jobs"]) == [5000]
    assert time.process_time() - started < 2


def test_graph_draws_a_long_capped_schedule_as_one_delay_queue() -> None:
    from rabbitflow.render.graph import render

    text = "version: 1\nqueues:\n  jobs:\n    retry: {max_retries: 10000, max_delay: 1s}\n"
    drawing = render(expand(load_text(text)), "mermaid")
    assert drawing.count("jobs.retry.") == 1 and "jobs.retry.1s" in drawing


def test_a_stream_may_keep_messages_longer_than_a_ttl_can_be() -> None:
    text = "version: 1\nqueues:\n  audit:\n    type: stream\n    max_age: 400d\n"
    [queue] = expand(load_text(text)).queues
    assert queue.arguments["x-max-age"] == "400D"
