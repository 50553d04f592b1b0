"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from rabbitflow.errors import ConfigError
from rabbitflow.worker.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker(clock: FakeClock, failures: int = 3, reset_after: float | str = 10) -> CircuitBreaker:
    return CircuitBreaker(failures, reset_after, clock=clock)


def test_starts_closed_and_lets_everything_through(clock: FakeClock) -> None:
    cb = breaker(clock)
    assert cb.state is BreakerState.CLOSED
    assert all(cb.allow() for _ in range(100))
    assert cb.seconds_until_half_open() == 0


def test_opens_after_n_consecutive_failures(clock: FakeClock) -> None:
    cb = breaker(clock, failures=3)
    cb.record_failure()
    cb.record_failure()
    assert cb.state is BreakerState.CLOSED
    cb.record_failure()
    assert cb.state is BreakerState.OPEN
    assert not cb.allow()


def test_a_success_resets_the_failure_count(clock: FakeClock) -> None:
    cb = breaker(clock, failures=3)
    for _ in range(5):
        cb.record_failure()
        cb.record_failure()
        cb.record_success()
    assert cb.state is BreakerState.CLOSED
    assert cb.consecutive_failures == 0


def test_half_opens_after_reset_time_and_lets_one_trial_through(clock: FakeClock) -> None:
    cb = breaker(clock, failures=1, reset_after=10)
    cb.record_failure()
    clock.advance(4)
    assert cb.seconds_until_half_open() == pytest.approx(6)
    assert not cb.allow()
    clock.advance(6)
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.seconds_until_half_open() == 0
    assert cb.allow()
    assert not cb.allow(), "only one trial while half-open"


def test_trial_success_closes(clock: FakeClock) -> None:
    cb = breaker(clock, failures=2)
    cb.record_failure()
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    cb.record_success()
    assert cb.state is BreakerState.CLOSED
    assert cb.allow()
    cb.record_failure()
    assert cb.state is BreakerState.CLOSED, "the count starts again from zero"


def test_trial_failure_reopens_for_a_full_reset_period(clock: FakeClock) -> None:
    cb = breaker(clock, failures=2, reset_after=10)
    cb.record_failure()
    cb.record_failure()
    clock.advance(15)
    assert cb.allow()
    cb.record_failure()
    assert cb.state is BreakerState.OPEN
    assert cb.seconds_until_half_open() == pytest.approx(10)
    clock.advance(9.9)
    assert not cb.allow()
    clock.advance(0.1)
    assert cb.allow()


def test_outcomes_of_messages_in_flight_while_open_change_nothing(clock: FakeClock) -> None:
    cb = breaker(clock, failures=1, reset_after=10)
    cb.record_failure()
    clock.advance(5)
    cb.record_failure()
    cb.record_success()
    assert cb.state is BreakerState.OPEN
    assert cb.seconds_until_half_open() == pytest.approx(5)


def test_listeners_see_every_change_in_order(clock: FakeClock) -> None:
    changes: list[tuple[BreakerState, BreakerState]] = []
    cb = CircuitBreaker(1, 1, clock=clock, listeners=[lambda old, new: changes.append((old, new))])
    cb.record_failure()
    clock.advance(1)
    cb.allow()
    cb.record_failure()
    clock.advance(1)
    cb.allow()
    cb.record_success()
    opened, half, closed = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED
    assert changes == [
        (closed, opened),
        (opened, half),
        (half, opened),
        (opened, half),
        (half, closed),
    ]


def test_a_failing_listener_is_logged_and_does_not_break_the_breaker(clock: FakeClock) -> None:
    seen: list[BreakerState] = []

    def broken(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("metrics down")

    cb = CircuitBreaker(1, 1, clock=clock, listeners=[broken])
    cb.add_listener(lambda old, new: seen.append(new))
    with capture_logs() as logs:
        cb.record_failure()
    assert cb.state is BreakerState.OPEN
    assert seen == [BreakerState.OPEN]
    assert logs[0]["event"] == "breaker_listener_failed"
    assert logs[0]["new"] == "open"


@pytest.mark.parametrize(
    ("reset_after", "seconds"),
    [("30s", 30.0), ("250ms", 0.25), ("5m", 300.0), (2, 2.0), (0.5, 0.5)],
)
def test_reset_after_takes_a_duration_string_or_seconds(
    reset_after: float | str, seconds: float
) -> None:
    assert CircuitBreaker(reset_after=reset_after).reset_after == seconds


def test_defaults_are_five_failures_and_thirty_seconds() -> None:
    cb = CircuitBreaker()
    assert (cb.failures, cb.reset_after) == (5, 30.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": 0}, "failures must be an integer >= 1"),
        ({"failures": True}, "failures must be an integer >= 1"),
        ({"reset_after": 0}, "must be positive"),
        ({"reset_after": "-1s"}, "invalid duration"),
        ({"reset_after": "soon"}, "invalid duration"),
        ({"reset_after": "30"}, "with a unit"),
    ],
)
def test_impossible_settings_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
