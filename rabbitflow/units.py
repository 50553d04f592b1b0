"""Durations (milliseconds) and sizes (bytes), as written in topology files."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_duration(value: object) -> int:
    """Read a duration as whole milliseconds.

    Args:
        value: an int (milliseconds) or a string such as ``250ms``, ``1s``, ``5m``, ``7d``.

    Raises:
        ValueError: for anything else (floats, unknown units, booleans).
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 1s, 5m, 1h, 7d or int milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return int(m.group(1)) * _DURATION_MS[m.group(2)]
        if value.strip().isdigit():
            return int(value)
    raise ValueError(f"invalid duration {value!r}: use 250ms, 1s, 5m, 1h, 7d or int milliseconds")


def parse_size(value: object) -> int:
    """Read a size as bytes: an int, or ``512KiB``, ``1GiB``, ``10MB``…

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576, 512KiB or 1GiB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_BYTES[m.group(2)]
    raise ValueError(f"invalid size {value!r}: use bytes as an int, or B/KiB/MiB/GiB (e.g. 1GiB)")


def format_duration(ms: int) -> str:
    """Write milliseconds in the largest of ms, s, m, h, d that divides them exactly.

    >>> format_duration(90_000)
    '90s'
    >>> format_duration(120_000)
    '2m'
    """
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def stream_max_age(ms: int) -> str:
    """Write a duration as RabbitMQ's `x-max-age` (``7D``, ``12h``, ``30m``, ``45s``).

    Raises:
        ValueError: when it is not a whole, positive number of seconds.
    """
    if ms <= 0 or ms % 1000:
        raise ValueError("max_age must be a positive whole number of seconds")
    for unit, size in (("D", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise AssertionError("unreachable: ms is a multiple of 1000")
