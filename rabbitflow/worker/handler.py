"""A registered handler: the function, its queue and options, and how to call it."""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rabbitflow.errors import HandlerError
from rabbitflow.units import parse_duration
from rabbitflow.worker.codec import Decoder, make_decoder
from rabbitflow.worker.message import Message

HandlerFunc = Callable[..., Any]
"""A user's handler: ``async def`` or plain ``def``, body first, optional `Message`."""


@dataclass(frozen=True)
class HandlerSpec:
    """Everything the consumer needs to run one handler, worked out once at registration."""

    func: HandlerFunc
    queue: str
    prefetch: int | None
    timeout: float | None
    is_async: bool
    decoder: Decoder | None
    """None when the handler takes no body parameter."""
    message_param: str | None
    """The name of the parameter annotated `Message`, if any."""
    body_first: bool
    options: dict[str, Any]
    """Further options (idempotency store, circuit breaker) by name."""
    body_type: Any = None
    """The body parameter's annotation (`inspect.Parameter.empty` when unannotated); None
    when the handler takes no body. Exports read it for the payload's JSON Schema."""

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))

    def call(self, body: Any, message: Message) -> Any:
        """Call the function with the decoded body and/or the message."""
        if self.message_param is None:
            return self.func(body)
        if self.decoder is None:
            return self.func(message)
        return self.func(body, message) if self.body_first else self.func(message, body)


def inspect_handler(
    func: HandlerFunc,
    queue: str,
    *,
    prefetch: int | None = None,
    timeout: float | str | None = None,
    **options: Any,
) -> HandlerSpec:
    """Read a handler's signature: which parameter is the body, which the `Message`.

    Raises:
        HandlerError: for a signature rabbitflow cannot call, or bad options.
    """
    if not callable(func):
        raise HandlerError(f"handler for {queue!r} is not callable: {func!r}")
    if prefetch is not None and not 1 <= prefetch <= 65535:
        raise HandlerError(
            f"handler {func.__qualname__}: prefetch must be 1..65535, not {prefetch}"
        )
    seconds = _seconds(timeout, func)
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # an annotation that does not resolve
        raise HandlerError(f"handler {func.__qualname__}: cannot read annotations: {exc}") from None
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required_other = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if required_other or len(params) > 2:
        raise HandlerError(
            f"handler {func.__qualname__} must take the body and/or a "
            "Message parameter, nothing else"
        )
    message_param = next((p.name for p in params if hints.get(p.name) is Message), None)
    body_params = [p for p in params if p.name != message_param]
    if len(body_params) > 1:
        raise HandlerError(
            f"handler {func.__qualname__}: two body parameters "
            f"({', '.join(p.name for p in body_params)}); annotate one as Message"
        )
    decoder = None
    body_first = True
    body_type: Any = None
    if body_params:
        body = body_params[0]
        body_type = hints.get(body.name, inspect.Parameter.empty)
        decoder = make_decoder(body_type)
        body_first = params[0].name == body.name
    # An object whose __call__ is async is an async handler too.
    call = getattr(type(func), "__call__", None)  # noqa: B004 - we need the method itself
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)
    return HandlerSpec(
        func,
        queue,
        prefetch,
        seconds,
        is_async,
        decoder,
        message_param,
        body_first,
        options,
        body_type,
    )


def _seconds(timeout: float | str | None, func: HandlerFunc) -> float | None:
    """A decorator's ``timeout=`` in seconds: a number is seconds, a string a duration."""
    if timeout is None:
        return None
    hint = "use seconds (30, 0.5) or a duration such as '250ms', '30s', '5m'"
    # A bare number in a string would be milliseconds to parse_duration (as in topology
    # files) but seconds here: refused rather than guessed.
    bare = isinstance(timeout, str) and timeout.strip().replace(".", "", 1).isdigit()
    if isinstance(timeout, bool) or bare or not isinstance(timeout, int | float | str):
        raise HandlerError(f"handler {func.__qualname__}: invalid timeout {timeout!r}: {hint}")
    try:
        value = parse_duration(timeout) / 1000 if isinstance(timeout, str) else float(timeout)
    except ValueError:
        raise HandlerError(
            f"handler {func.__qualname__}: invalid timeout {timeout!r}: {hint}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise HandlerError(
            f"handler {func.__qualname__}: timeout must be a positive number of seconds, "
            f"not {timeout!r}"
        )
    return value
