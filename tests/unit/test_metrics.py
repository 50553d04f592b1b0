"""Metrics: names and labels of DESIGN.md §5, fed through the consumer and publisher hooks."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from rabbitflow.errors import BodyDecodeError
from rabbitflow.metrics import Metrics
from rabbitflow.worker.breaker import CircuitBreaker
from rabbitflow.worker.outcome import Reject


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_outcomes_are_counted_per_queue_and_outcome() -> None:
    m = Metrics()
    m.add_queue("work", [100, 200])
    for _ in range(3):
        m.outcome("work", "ack", 0.01)
    m.outcome("work", "retry", 0.02, delay_ms=100, error=RuntimeError("x"))
    m.outcome("work", "retry", 0.02, delay_ms=200, error=RuntimeError("x"))
    m.outcome("work", "dead_letter", 0.03, error=Reject("poison"))
    m.outcome("work", "dead_letter", 0.0, error=BodyDecodeError("bad json"))
    m.outcome("work", "nack", 0.0, error=RuntimeError("x"))
    assert value(m, "rabbitflow_messages_total", queue="work", outcome="ack") == 3
    assert value(m, "rabbitflow_messages_total", queue="work", outcome="retry") == 2
    assert value(m, "rabbitflow_messages_total", queue="work", outcome="dead_letter") == 2
    assert value(m, "rabbitflow_messages_total", queue="work", outcome="nack") == 1
    assert value(m, "rabbitflow_handler_seconds_count", queue="work") == 8
    assert value(m, "rabbitflow_retries_total", queue="work", delay="100ms") == 1
    assert value(m, "rabbitflow_retries_total", queue="work", delay="200ms") == 1
    assert value(m, "rabbitflow_dead_letters_total", queue="work", error="Reject") == 1
    assert value(m, "rabbitflow_dead_letters_total", queue="work", error="BodyDecodeError") == 1


def test_every_outcome_is_exposed_at_zero_before_traffic() -> None:
    """Pre-bound children make rate() work from the first scrape."""
    m = Metrics()
    m.add_queue("work", [1000])
    for outcome in ("ack", "retry", "dead_letter", "nack"):
        assert value(m, "rabbitflow_messages_total", queue="work", outcome=outcome) == 0
    assert value(m, "rabbitflow_retries_total", queue="work", delay="1s") == 0


def test_a_skipped_duplicate_is_counted_but_not_timed() -> None:
    m = Metrics()
    m.outcome("work", "ack", None)
    assert value(m, "rabbitflow_messages_total", queue="work", outcome="ack") == 1
    assert value(m, "rabbitflow_handler_seconds_count", queue="work") == 0


def test_publishes_by_exchange_and_outcome_with_confirm_latency() -> None:
    m = Metrics()
    m.publish("orders", "confirmed", 0.002)
    m.publish("orders", "returned", 0.003)
    m.publish("", "confirmed", 0.001)
    m.publish("orders", "failed", 10.0)
    assert value(m, "rabbitflow_published_total", exchange="orders", outcome="confirmed") == 1
    assert value(m, "rabbitflow_published_total", exchange="orders", outcome="returned") == 1
    assert value(m, "rabbitflow_published_total", exchange="orders", outcome="failed") == 1
    assert value(m, "rabbitflow_published_total", exchange="orders", outcome="nacked") == 0
    assert value(m, "rabbitflow_published_total", exchange="amq.default", outcome="confirmed") == 1
    # a publish without an answer has no confirm latency
    assert value(m, "rabbitflow_publish_confirm_seconds_count", exchange="orders") == 2


def test_in_flight_is_read_at_scrape_time() -> None:
    m = Metrics()
    current = [0]
    m.watch_in_flight("work", lambda: current[0])
    current[0] = 7
    assert value(m, "rabbitflow_in_flight", queue="work") == 7


def test_breaker_state_follows_the_breaker() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, reset_after=1, clock=lambda: now[0])
    m = Metrics()
    m.watch_breaker("work", breaker)
    m.watch_breaker("work", breaker)  # twice: still one listener
    assert value(m, "rabbitflow_circuit_breaker_state", queue="work") == 0
    breaker.record_failure()
    assert value(m, "rabbitflow_circuit_breaker_state", queue="work") == 2
    now[0] = 2.0
    assert breaker.state.value == "half_open"
    assert value(m, "rabbitflow_circuit_breaker_state", queue="work") == 1
    breaker.record_success()
    assert value(m, "rabbitflow_circuit_breaker_state", queue="work") == 0


def test_depths_and_a_vanished_queue() -> None:
    m = Metrics()
    m.depth("work", 12)
    m.depth("work", 4, dead_letters=True)
    assert value(m, "rabbitflow_queue_messages", queue="work") == 12
    assert value(m, "rabbitflow_dead_letter_messages", queue="work") == 4
    m.depth("work", None)
    m.depth("gone", None)
    assert value(m, "rabbitflow_queue_messages", queue="work") is None


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.outcome("work", "ack", 0.1)
    assert value(b, "rabbitflow_messages_total", queue="work", outcome="ack") is None
    shared = CollectorRegistry()
    Metrics(shared).outcome("work", "ack", 0.1)
    assert b"rabbitflow_messages_total" in generate_latest(shared)
