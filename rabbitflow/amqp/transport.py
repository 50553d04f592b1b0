"""The seam between rabbitflow and whatever carries AMQP: the aiormq adapter in
production, the in-memory broker of `rabbitflow.testing` in tests.

Production never imports the testing package. A transport for another URL scheme is
*registered* here (`register_scheme`), or found through the ``rabbitflow.transports``
entry-point group, and `rabbitflow.amqp.connection.connect` consults this registry for
every scheme that is not ``amqp``/``amqps``.

Beyond aio-pika's `AbstractConnection`, rabbitflow asks a connection two things, the
narrow protocol `ConnectionState`: is it still usable, and did the broker block it
(``connection.blocked``, a memory or disk alarm). Both transports answer them, so a
broker alarm can be simulated in memory as well.

And a channel may offer one thing more, `deliver_directly`: its deliveries handed to a
plain function as they are read, instead of a task per delivery running the consumer's
callback (aiormq's way). The at-most-once and batch consumers use it: they start their
own tasks per group of deliveries, so a task per delivery was pure cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any, Protocol, cast, runtime_checkable

import aiormq
import structlog
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from rabbitflow.amqp.frames import DirectDeliveries

log = structlog.get_logger("rabbitflow.amqp")

CONNECTION_LOST: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    # aiormq raises RuntimeError (ChannelInvalidStateError among them) for a write on a
    # channel or connection that closed under it.
    RuntimeError,
)
"""What an operation on a channel raises when the channel or its connection went away
(or the broker closed it): the one set every module catches."""

GONE_OR_SILENT: tuple[type[BaseException], ...] = (*CONNECTION_LOST, TimeoutError)
"""`CONNECTION_LOST`, or no answer within a bound (closing, cancelling on the way out)."""

Opener = Callable[[str], Awaitable[AbstractConnection]]
"""Opens a connection for one URL of a registered scheme."""

ENTRY_POINT_GROUP = "rabbitflow.transports"
"""Entry points named by URL scheme, each an `Opener` (``memory`` is rabbitflow's own)."""

_openers: dict[str, Opener] = {}


@runtime_checkable
class ConnectionState(Protocol):
    """What rabbitflow reads from a connection beyond `AbstractConnection`."""

    @property
    def is_usable(self) -> bool:
        """Open, and not known to be lost (closed by the broker or the network)."""

    @property
    def is_blocked(self) -> bool:
        """The broker blocked the connection (``connection.blocked``): writes are held."""


def delivery_tag(raw: DeliveredMessage) -> int:
    """The delivery tag of a delivery (0 for one without, which no broker sends)."""
    return cast(Basic.Deliver, raw.delivery).delivery_tag or 0


Arrival = Callable[[DeliveredMessage], None]
"""Takes one delivery as the channel reads it; must not block, and should not raise."""


def deliver_directly(channel: Any, arrival: Arrival) -> bool:
    """Hand every delivery of ``channel``'s consumers to ``arrival`` in the channel's
    frame reader (in delivery order, no task per delivery). False when the channel
    cannot: its consumers' callbacks then run as usual, in a task each.

    A transport's channel offers it as a method ``deliver_directly(arrival)``; for
    aiormq's channel it is done here, on that one instance, by
    `rabbitflow.amqp.frames.DirectDeliveries` when the channel has the parts of aiormq 7
    that uses: otherwise False, never a guess.
    """
    own = getattr(channel, "deliver_directly", None)
    if own is not None:
        return bool(own(arrival))
    return isinstance(channel, aiormq.Channel) and DirectDeliveries.install(channel, arrival)


def register_scheme(scheme: str, opener: Opener) -> None:
    """Make ``connect`` open URLs of ``scheme`` with ``opener`` (replaces an earlier one)."""
    _openers[scheme] = opener


def unregister_scheme(scheme: str) -> None:
    """Forget the opener of ``scheme``."""
    _openers.pop(scheme, None)


def opener_for(scheme: str) -> Opener | None:
    """The opener registered for ``scheme``, else the entry point of that name, else None."""
    opener = _openers.get(scheme)
    if opener is not None:
        return opener
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        loaded: Opener = ep.load()
        _openers[scheme] = loaded
        return loaded
    return None


def registered_schemes() -> list[str]:
    """The schemes a transport is registered or installed for (for error messages)."""
    found = set(_openers) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(found)


__all__ = [
    "CONNECTION_LOST",
    "Arrival",
    "ENTRY_POINT_GROUP",
    "GONE_OR_SILENT",
    "ConnectionState",
    "Opener",
    "deliver_directly",
    "delivery_tag",
    "opener_for",
    "register_scheme",
    "registered_schemes",
    "unregister_scheme",
]
