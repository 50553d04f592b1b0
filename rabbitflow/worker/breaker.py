"""A circuit breaker: stop feeding a failing downstream, probe it later, resume on success.

A pure state machine with an injectable clock; it does no I/O and starts no timers. The
consumer asks `allow()` before taking a message, reports each outcome with
`record_success()` / `record_failure()`, and while the breaker is OPEN it stops consuming
(so messages wait in the queue instead of burning retries), waking up after
`seconds_until_half_open()` to let one trial message through.

States::

    CLOSED --(N consecutive failures)--> OPEN --(reset_after elapsed)--> HALF_OPEN
    HALF_OPEN --(success)--> CLOSED          HALF_OPEN --(failure)--> OPEN
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from enum import StrEnum

import structlog

from rabbitflow.errors import ConfigError
from rabbitflow.worker.clock import Clock, Seconds, to_seconds

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    """Normal operation: every message is let through; failures are counted."""
    OPEN = "open"
    """Tripped: nothing is let through until ``reset_after`` has elapsed."""
    HALF_OPEN = "half_open"
    """Probing: one trial message is let through; its outcome closes or reopens."""


Listener = Callable[[BreakerState, BreakerState], object]
"""Called with (old, new) after each state change; for logs and metrics."""


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; half-opens ``reset_after`` later.

    Args:
        failures: consecutive failures that open the breaker (at least 1).
        reset_after: how long it stays open before letting a trial through: seconds
            as a number, or a duration string such as ``"30s"`` or ``"500ms"``.
        clock: current time in seconds, monotonic; `time.monotonic` by default.
        listeners: called with (old, new) on every state change.

    Raises:
        ConfigError: for ``failures`` below 1 or a non-positive ``reset_after``.

    Outcomes reported while OPEN (messages that were already in flight when it opened)
    change nothing: a late failure does not extend the wait and a late success does not
    close it, because only the half-open trial tells whether the downstream recovered.
    """

    def __init__(
        self,
        failures: int = 5,
        reset_after: Seconds = "30s",
        *,
        clock: Clock = time.monotonic,
        listeners: Iterable[Listener] = (),
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ConfigError(f"circuit breaker failures must be an integer >= 1, got {failures!r}")
        self.failures = failures
        self.reset_after = to_seconds(reset_after, "circuit breaker reset_after")
        self._clock = clock
        self._listeners = list(listeners)
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failures={self.failures}, reset_after={self.reset_after}, "
            f"state={self._state.value})"
        )

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose wait is over reads as HALF_OPEN."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after:
            self._trial_out = False
            self._change(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures counted since the last success (0 after it closes)."""
        return self._consecutive

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` on every later state change."""
        self._listeners.append(listener)

    def allow(self) -> bool:
        """Whether a message may be processed now.

        CLOSED: always. OPEN: never. HALF_OPEN: once, for the trial message; further calls
        return False until that trial's outcome is recorded.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def record_success(self) -> None:
        """Report a processed message: resets the count, and closes a half-open breaker."""
        state = self.state
        if state is BreakerState.OPEN:
            return
        self._consecutive = 0
        if state is BreakerState.HALF_OPEN:
            self._trial_out = False
            self._change(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Report a failed message: counts it, and opens the breaker when due."""
        state = self.state
        if state is BreakerState.OPEN:
            return
        self._consecutive += 1
        if state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
            self._opened_at = self._clock()
            self._trial_out = False
            self._change(BreakerState.OPEN)

    def seconds_until_half_open(self) -> float:
        """How long an OPEN breaker still waits before its trial; 0 in any other state."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_after - self._clock())

    def _change(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.CLOSED:
            self._consecutive = 0
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                # A broken metrics or logging hook must not stop the breaker from working.
                log.exception("breaker_listener_failed", old=old.value, new=new.value)


__all__ = ["BreakerState", "CircuitBreaker", "Listener"]
