"""Opening connections: several URLs tried in turn, bounded in time, passwords masked."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractConnection, TimeoutType, UnderlayConnection

from rabbitflow.amqp.frames import Underlay
from rabbitflow.amqp.transport import ConnectionState, opener_for, registered_schemes
from rabbitflow.errors import BrokerUnavailable, ConfigError
from rabbitflow.settings import Settings, mask_url, split_urls, vhost_of

__all__ = [
    "Link",
    "connect",
    "connect_with",
    "is_blocked",
    "is_open",
    "vhost_of",
    "with_heartbeat",
]

log = structlog.get_logger("rabbitflow.amqp")


class _Connection(aio_pika.Connection):
    """The aiormq adapter: an aio-pika connection that answers `ConnectionState`, over
    aiormq's connection with rabbitflow's frame reader (`rabbitflow.amqp.frames`).

    It also closes itself when the handshake fails. Otherwise the half-made connection is
    closed by its ``__del__``, which the garbage collector may run in another thread,
    where there is no event loop to run it (a "never awaited" warning, a leak)."""

    @property
    def is_usable(self) -> bool:
        return _aiormq_usable(self)

    @property
    def is_blocked(self) -> bool:
        return _aiormq_blocked(self)

    underlay: type[UnderlayConnection] = Underlay
    """How the aiormq connection under it is made: with rabbitflow's frame reader."""

    async def connect(self, timeout: TimeoutType = None) -> None:
        # aio-pika's own connect, with `underlay` in place of aio-pika's.
        try:
            self.transport = await self.underlay.connect(
                self.url, self._on_connection_close, timeout=timeout, **self.kwargs
            )
            await self._on_connected()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.close()
            raise


class _AiormqFramesConnection(_Connection):
    """`_Connection` over aiormq's own frame reader (``RABBITFLOW_FRAME_READER=aiormq``)."""

    underlay = UnderlayConnection


FrameReaderName = Literal["rabbitflow", "aiormq"]
_CONNECTION_CLASSES: dict[str, type[_Connection]] = {
    "rabbitflow": _Connection,
    "aiormq": _AiormqFramesConnection,
}


def with_heartbeat(url: str, heartbeat: int) -> str:
    """Add ``heartbeat=N`` to an AMQP URL that does not set one."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if "heartbeat" not in query:
        query["heartbeat"] = [str(heartbeat)]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def without_verification(url: str) -> str:
    """An ``amqps://`` URL with certificate verification turned off (aiormq's
    ``no_verify_ssl``); other URLs unchanged."""
    parts = urlsplit(url)
    if parts.scheme != "amqps":
        return url
    query = parse_qs(parts.query)
    query["no_verify_ssl"] = ["1"]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


async def connect(
    urls: str | Sequence[str],
    *,
    timeout: float = 5.0,
    heartbeat: int = 15,
    name: str = "rabbitflow",
    tls_verify: bool = True,
    frame_reader: FrameReaderName = "rabbitflow",
) -> AbstractConnection:
    """Connect to the first broker that answers.

    Args:
        urls: one URL, a comma-separated list, or a sequence; tried in order.
        timeout: seconds allowed for each URL.
        heartbeat: AMQP heartbeat in seconds, unless the URL sets one.
        name: the connection name shown in the management UI.
        tls_verify: verify the certificate of ``amqps://`` brokers (the default); when
            false, a warning is logged for each such URL.
        frame_reader: ``rabbitflow`` (`rabbitflow.amqp.frames`) or ``aiormq``'s own.

    Raises:
        BrokerUnavailable: when none answers; the message masks passwords.
        ConfigError: for a URL that is not AMQP.
    """
    candidates = split_urls(urls) if isinstance(urls, str) else list(urls)
    reasons: list[str] = []
    for url in candidates:
        scheme = urlsplit(url).scheme
        if scheme not in ("amqp", "amqps"):
            opener = opener_for(scheme)
            if opener is None:
                others = "".join(f", {s}://" for s in registered_schemes())
                raise ConfigError(
                    f"not an AMQP URL: {mask_url(url)} (expected amqp://, amqps://{others})"
                )
            return await opener(url)
        target = with_heartbeat(url, heartbeat)
        if scheme == "amqps" and not tls_verify:
            log.warning(
                "TLS certificate verification is off (RABBITFLOW_TLS_VERIFY=false): "
                "the broker's identity is not checked",
                url=mask_url(url),
            )
            target = without_verification(target)
        try:
            return await asyncio.wait_for(
                aio_pika.connect(
                    target,
                    connection_class=_CONNECTION_CLASSES[frame_reader],
                    client_properties={"connection_name": name},
                ),
                timeout,
            )
        except TimeoutError:
            reasons.append(f"{mask_url(url)}: no answer within {timeout:g}s")
        except aiormq.exceptions.ProbableAuthenticationError:
            reasons.append(f"{mask_url(url)}: authentication refused (check user and password)")
        except (ConnectionError, OSError, aiormq.exceptions.AMQPError, ssl.SSLError) as exc:
            reasons.append(f"{mask_url(url)}: {_reason(exc)}")
    raise BrokerUnavailable("cannot connect to RabbitMQ: " + "; ".join(reasons))


async def connect_with(settings: Settings, *, name: str = "rabbitflow") -> AbstractConnection:
    """`connect` with everything ``settings`` says about connecting (URLs, timeouts,
    heartbeat, TLS verification, frame reader): one place, so that no caller forgets one.
    """
    return await connect(
        settings.urls,
        timeout=settings.connect_timeout,
        heartbeat=settings.heartbeat,
        name=name,
        tls_verify=settings.tls_verify,
        frame_reader=settings.frame_reader,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiormq.exceptions.ConnectionClosed) and exc.args:
        text = " ".join(str(a) for a in exc.args)
    if "vhost" in text.lower() or "NOT_ALLOWED" in text or "Connection.Close" in text:
        text = "the broker closed the connection"
        return f"{text} (does the vhost exist, and may this user use it?)"
    return text.replace("\n", " ")


def is_open(connection: AbstractConnection | None) -> bool:
    """Whether a connection is usable.

    aio-pika 10 marks a connection closed (``is_closed``) only when the client closes it;
    one the broker or the network closed keeps ``is_closed`` false and only clears its
    ``connected`` event, so both are checked.
    """
    if connection is None or connection.is_closed:
        return False
    if isinstance(connection, ConnectionState):
        return connection.is_usable
    return _aiormq_usable(connection)


def _aiormq_usable(connection: AbstractConnection) -> bool:
    if connection.is_closed:
        return False
    connected = getattr(connection, "connected", None)
    if isinstance(connected, asyncio.Event) and not connected.is_set():
        return False
    underlay = getattr(getattr(connection, "transport", None), "connection", None)
    return not bool(getattr(underlay, "is_closed", False))


def is_blocked(connection: AbstractConnection) -> bool:
    """Whether the broker blocked this connection (memory or disk alarm).

    Asked of the transport (`ConnectionState`); the in-memory broker simulates alarms.
    """
    if isinstance(connection, ConnectionState):
        return connection.is_blocked
    return _aiormq_blocked(connection)


def _aiormq_blocked(connection: AbstractConnection) -> bool:
    # aiormq tracks ``connection.blocked`` in a private event and holds every write while
    # it is clear; there is no public accessor, so it is read by its mangled name (here
    # only: the adapter is the one place that knows aiormq's insides).
    transport = getattr(connection, "transport", None)
    underlay = getattr(transport, "connection", None)
    event = getattr(underlay, "_Connection__connection_unblocked", None)
    return isinstance(event, asyncio.Event) and not event.is_set()


class Link:
    """One connection, opened on first use and reopened on the next use after it closed.

    Used by publishers: a lost connection costs the publishes in flight (their outcome is
    unknown and they raise), never the ones after it.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        name: str,
        timeout: float = 5.0,
        heartbeat: int = 15,
        tls_verify: bool = True,
        frame_reader: FrameReaderName = "rabbitflow",
    ) -> None:
        self.urls = urls
        self.tls_verify = tls_verify
        self.frame_reader: FrameReaderName = frame_reader
        self.name = name
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self._guard: asyncio.Task[None] | None = None

    @property
    def current(self) -> AbstractConnection | None:
        """The open connection, if any."""
        c = self._connection
        return c if is_open(c) else None

    async def get(self) -> AbstractConnection:
        """The open connection, connecting first when there is none.

        Raises:
            BrokerUnavailable: when no URL answers.
        """
        current = self.current
        if current is not None:
            return current
        async with self._lock:
            if self.current is None:
                stale, self._connection = self._connection, None
                if stale is not None and not stale.is_closed:
                    # Lost under us: release its resources before replacing it.
                    with contextlib.suppress(Exception):
                        await stale.close()
                self._connection = await connect(
                    self.urls,
                    timeout=self.timeout,
                    heartbeat=self.heartbeat,
                    name=self.name,
                    tls_verify=self.tls_verify,
                    frame_reader=self.frame_reader,
                )
                self._close_with_the_loop()
            assert self._connection is not None
            return self._connection

    def _close_with_the_loop(self) -> None:
        """Close the connection when the event loop ends, if nobody closed it before.

        A script that publishes and returns from ``asyncio.run`` without closing would
        otherwise leave the connection to the garbage collector after the loop closed,
        and aio-pika's close callbacks print "Task was destroyed but it is pending".
        ``asyncio.run`` cancels every task before closing the loop: this one then closes
        the connection while the loop still runs.
        """
        if self._guard is None or self._guard.done():
            self._guard = asyncio.get_running_loop().create_task(
                self._close_on_cancel(), name=f"{self.name}-close-with-loop"
            )

    async def _close_on_cancel(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._close()
            # Let the connection's close callbacks run before the loop goes away.
            for _ in range(3):
                await asyncio.sleep(0)
            raise

    async def close(self) -> None:
        """Close the connection if open."""
        guard, self._guard = self._guard, None
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
        await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await connection.close()
