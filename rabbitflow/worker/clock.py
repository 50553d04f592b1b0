"""Clocks and durations for the worker's timers (leases, breaker resets).

Durations here are seconds (floats), the unit asyncio and the stores use; a duration
string such as ``30s`` or ``250ms`` is read with `rabbitflow.units.parse_duration`.
"""

from __future__ import annotations

from collections.abc import Callable

from rabbitflow.errors import ConfigError
from rabbitflow.units import parse_duration

Clock = Callable[[], float]
"""A function returning the current time in seconds; tests inject a fake one."""

Seconds = float | int | str
"""A duration given as seconds (``30``, ``0.5``) or as a duration string (``"30s"``)."""


def to_seconds(value: Seconds, what: str) -> float:
    """Read a duration as positive seconds.

    Args:
        value: seconds as a number, or a string such as ``250ms``, ``30s``, ``5m``, ``24h``.
        what: the option's name, for the error message.

    Raises:
        ConfigError: for a value that is not a duration or is not positive.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a duration such as 30s or a number of seconds")
    if isinstance(value, str):
        # parse_duration reads a bare number as milliseconds (the YAML convention); in
        # Python a bare number means seconds, so a digits-only string is refused as ambiguous.
        if value.strip().isdigit():
            raise ConfigError(
                f"{what}: write {value!r} with a unit (e.g. {value.strip()}s) "
                "or pass a number of seconds"
            )
        try:
            seconds = parse_duration(value) / 1000
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        raise ConfigError(
            f"{what} must be a duration such as 30s or a number of seconds, got {value!r}"
        )
    if not seconds > 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return seconds
