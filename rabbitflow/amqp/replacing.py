"""Decoding a content header whose text is not all UTF-8, with U+FFFD for the bytes that
are not (see `rabbitflow.amqp.frames`: refusing the frame would wedge its queue).

pamqp decodes AMQP short strings (properties such as ``message_id``, and field-table
keys) strictly; this decodes the same layout, in the same order, with replacement for
those, and hands every other value to pamqp's own decoders.
"""

from __future__ import annotations

import struct
from typing import Any

import pamqp.decode
from pamqp.commands import Basic
from pamqp.header import ContentHeader

_PROPERTIES = [
    (name, Basic.Properties.flags[name], getattr(Basic.Properties, "_" + name))
    for name in Basic.Properties.__slots__
]
_HEADER_START = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_LONG = struct.Struct(">I")


def decode_header_replacing(payload: bytes) -> ContentHeader:
    """A content header whose text is not all UTF-8, decoded as pamqp would but with
    U+FFFD for the bytes that are not (short-string properties, table keys); every
    other value as pamqp decodes it.

    Raises:
        ValueError, IndexError, struct.error: for a header that is not even that.
    """
    _, weight, body_size, flags = _HEADER_START.unpack_from(payload, 0)
    if flags & 1:  # a second flag word: RabbitMQ never sends one
        raise ValueError("continued property flags")
    at = _HEADER_START.size
    properties = Basic.Properties()
    for name, flag, kind in _PROPERTIES:
        if not flags & flag:
            continue
        value: Any
        if kind == "shortstr":
            size = payload[at]
            if at + 1 + size > len(payload):
                raise IndexError(f"{name} cut short")
            used, value = 1 + size, payload[at + 1 : at + 1 + size].decode("utf-8", "replace")
        elif kind == "table":
            used, value = _table_replacing(payload, at)
        else:
            used, value = pamqp.decode.by_type(payload[at:], kind)
        setattr(properties, name, value)
        at += used
    return ContentHeader(weight, body_size, properties)


def _table_replacing(data: bytes, at: int) -> tuple[int, dict[str, Any]]:
    end = at + 4 + _LONG.unpack_from(data, at)[0]
    if end > len(data):
        raise ValueError("field table longer than its frame")
    table: dict[str, Any] = {}
    i = at + 4
    while i < end:
        size = data[i]
        key = data[i + 1 : i + 1 + size].decode("utf-8", "replace")
        used, table[key] = _value_replacing(data, i + 1 + size)
        i += 1 + size + used
    return end - at, table


def _value_replacing(data: bytes, at: int) -> tuple[int, Any]:
    kind = data[at : at + 1]
    value: Any
    if kind == b"F":
        used, value = _table_replacing(data, at + 1)
    elif kind == b"A":
        end = at + 1 + 4 + _LONG.unpack_from(data, at + 1)[0]
        if end > len(data):
            raise ValueError("field array longer than its frame")
        items: list[Any] = []
        i = at + 5
        while i < end:
            used, item = _value_replacing(data, i)
            items.append(item)
            i += used
        used, value = end - at - 1, items
    else:
        return pamqp.decode.embedded_value(data[at:])
    return used + 1, value


__all__ = ["decode_header_replacing"]
