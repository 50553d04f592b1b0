"""One connection for the length of one command, with broker failures turned into
`BrokerError` (one line for the CLI, never a traceback)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aio_pika.abc import AbstractConnection

from rabbitflow.amqp.connection import connect_with
from rabbitflow.amqp.transport import CONNECTION_LOST
from rabbitflow.errors import BrokerError
from rabbitflow.settings import Settings, mask_url

R = TypeVar("R")


async def on_broker(
    settings: Settings,
    work: Callable[[AbstractConnection], Awaitable[R]],
    *,
    name: str = "rabbitflow",
) -> R:
    """Connect, run ``work`` with the connection, close it.

    Raises:
        BrokerUnavailable: when no broker answers.
        BrokerError: when the broker closes the channel or connection, or stops answering,
            while ``work`` runs.
    """
    connection = await connect_with(settings, name=name)
    try:
        return await work(connection)
    except TimeoutError:
        raise BrokerError(
            "the broker stopped answering in the middle of the command; "
            "nothing unconfirmed was removed, run it again"
        ) from None
    except CONNECTION_LOST as exc:
        reason = mask_url(str(exc) or type(exc).__name__).replace("\n", " ")
        raise BrokerError(f"the broker ended the command: {reason}") from None
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
