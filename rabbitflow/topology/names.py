"""Which names rabbitflow can send: one pure check for validate, the CLI and the producer.

RabbitMQ itself takes any UTF-8 name up to 255 bytes (control characters included). The
AMQP codec under aio-pika (pamqp 4) is stricter, and it is the one that decides: it
refuses, with ``ValueError: Invalid value for queue``, queue and exchange names with a
character outside ``a-z A-Z 0-9 - _ . : @ # , / +`` and space, and exchange names longer
than 127 characters. Routing keys are any UTF-8 up to 255 bytes. Found by declaring such
names on a real broker with and without the codec's check (docs/topology.md, "Names").
"""

from __future__ import annotations

import re
from typing import Literal

MAX_NAME_BYTES = 255
"""AMQP's short string: queue names and routing keys."""
MAX_EXCHANGE_CHARS = 127
"""pamqp's limit for exchange names (``exchange.declare``, ``basic.publish``)."""
NAME_CHARACTERS = "letters a-z A-Z, digits and - _ . : @ # , / + space"
_NAME = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]*")
_BAD = re.compile(r"[^a-zA-Z0-9\-_.:@#,/+ ]")

NameKind = Literal["queue", "exchange", "routing key"]


def name_problem(name: str, kind: NameKind) -> str | None:
    """Why ``name`` cannot be sent as a ``kind``, or None when it can.

    The message is a sentence without the name's context (``queue name is …``), for the
    caller to prefix with where the name came from.
    """
    size = len(name.encode("utf-8", "surrogatepass"))
    if kind == "routing key":
        if size > MAX_NAME_BYTES:
            return f"routing key is {size} bytes; AMQP allows at most {MAX_NAME_BYTES}"
        return None
    if kind == "exchange" and len(name) > MAX_EXCHANGE_CHARS and _NAME.fullmatch(name):
        return (
            f"exchange name is {len(name)} characters; the AMQP client sends at most "
            f"{MAX_EXCHANGE_CHARS}"
        )
    if size > MAX_NAME_BYTES:
        return f"{kind} name is {size} bytes; AMQP allows at most {MAX_NAME_BYTES}"
    bad = _BAD.search(name)
    if bad is not None:
        return (
            f"{kind} name has the character {bad.group()!r}, which the AMQP client "
            f"cannot send; use {NAME_CHARACTERS}"
        )
    return None


def short(name: str, limit: int = 60) -> str:
    """A name cut for an error line: ``'aaaa…aaa.dlx'`` keeps its start and its end."""
    if len(name) <= limit:
        return repr(name)
    return repr(name[: limit // 2] + "…" + name[-(limit // 2) :])


__all__ = ["MAX_EXCHANGE_CHARS", "MAX_NAME_BYTES", "NAME_CHARACTERS", "name_problem", "short"]
