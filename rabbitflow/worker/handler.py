"""A registered handler: the function, its queue and options, and how to call it."""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from rabbitflow.codec import Decoder, make_decoder
from rabbitflow.errors import HandlerError
from rabbitflow.topology.schema import RetryPolicy
from rabbitflow.units import parse_duration
from rabbitflow.worker.message import Message

if TYPE_CHECKING:
    from rabbitflow.streams.offsets import OffsetStore
    from rabbitflow.worker.breaker import CircuitBreaker
    from rabbitflow.worker.idempotency import IdempotencyStore

HandlerFunc = Callable[..., Any]
"""A user's handler: ``async def`` or plain ``def``, body first, optional `Message`."""

ExceptionTypes = tuple[type[BaseException], ...]
"""Exception classes of a retry filter (``retry_on``, ``dead_letter_on``)."""

DeliveryMode = Literal["at_least_once", "at_most_once"]
"""``handler(delivery=...)`` (DESIGN.md §8): ack after the run (the default) or on arrival."""
DELIVERY_MODES: tuple[str, ...] = ("at_least_once", "at_most_once")


@dataclass(frozen=True)
class Batch:
    """``handler(batch=Batch(max_size, max_wait))`` (DESIGN.md §8): the handler gets a
    list of bodies, handed over at ``max_size`` messages or ``max_wait`` after the first
    one arrived (seconds, or a duration such as ``"200ms"``), and at shutdown."""

    max_size: int
    max_wait: float | str = 0.2
    seconds: float = field(default=0.0, init=False, compare=False)
    """``max_wait`` in seconds."""

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
            raise HandlerError(f"Batch: max_size must be an int, not {self.max_size!r}")
        if not 1 <= self.max_size <= 65535:
            raise HandlerError(f"Batch: max_size must be 1..65535, not {self.max_size}")
        object.__setattr__(self, "seconds", _seconds(self.max_wait, "Batch.max_wait"))


class BatchFailure(Exception):
    """Raise in a batch handler with ``{index: exception}``: those messages follow the
    failure path one by one (retry per policy, then dead letter), the rest are acked."""

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        self.failures = dict(failures)
        super().__init__(f"{len(self.failures)} message(s) of the batch failed")


StreamOffset = str | int | datetime | timedelta
"""``handler(offset=...)`` on a stream (DESIGN.md §9): ``"first"``, ``"last"``,
``"next"``, an int offset, a `datetime`, or a duration (``"1h"``, a `timedelta`: the
events of that last stretch of time)."""

_NAMED_OFFSETS = ("first", "last", "next")

Retry = RetryPolicy
"""``handler(retry=Retry(max_retries=5, delay="200ms"))`` on a stream (DESIGN.md §9): the
topology's `RetryPolicy`, under the name the contract gives it."""

DEFAULT_STREAM_RETRY = RetryPolicy()
"""A stream handler's retries without ``retry=``: 3, from 1 s, exponential."""


@dataclass(frozen=True)
class StreamOptions:
    """A stream handler's options (DESIGN.md §9): where to start without a stored
    position, the name positions and the dead-letter queue go by, the offset store, and
    the in-worker retry schedule (a stream cannot requeue or dead-letter)."""

    offset: StreamOffset = "next"
    consumer_name: str | None = None
    """Names the stored position and the DLQ ``<stream>.<consumer_name>.dlq``; the
    handler's function name when not given."""
    offsets: OffsetStore | None = None
    """Where positions are stored; None: only in memory, for reconnects."""
    retry: RetryPolicy = DEFAULT_STREAM_RETRY


def start_argument(offset: StreamOffset, now: datetime | None = None) -> str | int | datetime:
    """The ``x-stream-offset`` consumer argument for ``offset``: a duration becomes the
    moment that long before ``now``."""
    if isinstance(offset, timedelta):
        return (now or datetime.now(UTC)) - offset
    if isinstance(offset, str) and offset not in _NAMED_OFFSETS:
        return (now or datetime.now(UTC)) - timedelta(milliseconds=parse_duration(offset))
    if isinstance(offset, datetime) and offset.tzinfo is None:
        return offset.replace(tzinfo=UTC)
    return offset


def stream_options(
    func: HandlerFunc,
    *,
    offset: StreamOffset | None,
    consumer_name: str | None,
    offsets: OffsetStore | None,
    retry: RetryPolicy | Mapping[str, Any] | None,
) -> StreamOptions | None:
    """Check a handler's stream options; None when none was given.

    Raises:
        HandlerError: naming the bad value and what it takes.
    """
    if offset is None and consumer_name is None and offsets is None and retry is None:
        return None
    where = f"handler {_name(func)}"
    if offset is None:
        offset = "next"
    _check_offset(where, offset)
    if consumer_name is not None and (
        not isinstance(consumer_name, str) or not consumer_name.strip() or len(consumer_name) > 200
    ):
        raise HandlerError(
            f"{where}: consumer_name must be a non-empty name, not {consumer_name!r}"
        )
    if offsets is not None and not all(
        callable(getattr(offsets, m, None)) for m in ("load", "store", "positions", "close")
    ):
        raise HandlerError(
            f"{where}: offsets must be an offset store (MemoryOffsets, SQLiteOffsets, "
            f"RedisOffsets), not {offsets!r}"
        )
    if retry is None:
        policy = DEFAULT_STREAM_RETRY
    elif isinstance(retry, RetryPolicy):
        policy = retry
    elif isinstance(retry, Mapping):
        try:
            policy = RetryPolicy.model_validate(dict(retry))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise HandlerError(f"{where}: invalid retry {dict(retry)!r}: {problems}") from None
    else:
        raise HandlerError(
            f"{where}: retry must be a RetryPolicy or a mapping such as "
            f"{{'max_retries': 3, 'delay': '1s'}}, not {retry!r}"
        )
    name = consumer_name.strip() if consumer_name is not None else None
    return StreamOptions(offset, name, offsets, policy)


def _check_offset(where: str, offset: object) -> None:
    hint = (
        "use 'first', 'last', 'next', an int offset, a datetime, or a duration such as "
        "'1h' or a timedelta"
    )
    if isinstance(offset, bool):
        raise HandlerError(f"{where}: invalid offset {offset!r}: {hint}")
    if isinstance(offset, int):
        if offset < 0:
            raise HandlerError(f"{where}: invalid offset {offset}: offsets start at 0")
        return
    if isinstance(offset, datetime):
        return
    if isinstance(offset, timedelta):
        if offset.total_seconds() <= 0:
            raise HandlerError(f"{where}: invalid offset {offset!r}: a duration must be positive")
        return
    if isinstance(offset, str):
        if offset in _NAMED_OFFSETS:
            return
        bare = offset.strip().isdigit()
        try:
            ms = parse_duration(offset)
        except ValueError:
            ms = 0
        if not bare and ms > 0:
            return
    raise HandlerError(f"{where}: invalid offset {offset!r}: {hint}")


@dataclass(frozen=True)
class HandlerOptions:
    """The options of ``handler(...)`` beyond queue, prefetch and timeout (DESIGN.md §2, §7)."""

    idempotency: IdempotencyStore | None = None
    """A store: a message whose key was processed before is acked without a new run."""
    idempotency_key: Callable[[Message], str | None] | None = None
    """The key of a message; its ``message_id`` when None."""
    circuit_breaker: CircuitBreaker | None = None
    """Pauses consuming after consecutive failures."""
    retry_on: ExceptionTypes = (Exception,)
    """Failures retried per the queue's policy (nearest class of the MRO decides)."""
    dead_letter_on: ExceptionTypes = ()
    """Failures dead-lettered at once (nearest class of the MRO decides)."""
    delivery: DeliveryMode = "at_least_once"
    """``at_most_once``: acked on arrival, before the run; a failure is ``dropped``."""
    batch: Batch | None = None
    """A batch handler: ``list[T]`` bodies (DESIGN.md §8)."""
    stream: StreamOptions | None = None
    """A stream handler's options (DESIGN.md §9); None: the defaults on a stream queue."""
    filters: dict[type[BaseException], bool] = field(default_factory=dict, compare=False)
    """Class → retry?, the two tuples merged (built once; read by `outcome.retryable`)."""

    def __post_init__(self) -> None:
        merged: dict[type[BaseException], bool] = dict.fromkeys(self.retry_on, True)
        merged.update(dict.fromkeys(self.dead_letter_on, False))
        self.filters.update(merged)


DEFAULT_OPTIONS = HandlerOptions()


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
    options: HandlerOptions = DEFAULT_OPTIONS
    """Idempotency, circuit breaker and the retry filters."""
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
    options: HandlerOptions | None = None,
) -> HandlerSpec:
    """Read a handler's signature: which parameter is the body, which the `Message`.

    Raises:
        HandlerError: for a signature rabbitflow cannot call, or bad options.
    """
    if options is None:
        options = DEFAULT_OPTIONS
    if not callable(func):
        raise HandlerError(f"handler for {queue!r} is not callable: {func!r}")
    if prefetch is not None and not 1 <= prefetch <= 65535:
        raise HandlerError(
            f"handler {func.__qualname__}: prefetch must be 1..65535, not {prefetch}"
        )
    seconds = _seconds(timeout, func)
    batch = options.batch
    if batch is not None:
        if not isinstance(batch, Batch):
            raise HandlerError(f"handler {_name(func)}: batch must be a Batch, not {batch!r}")
        if prefetch is None:
            prefetch = min(2 * batch.max_size, 65535)
        elif prefetch < batch.max_size:
            raise HandlerError(
                f"handler {_name(func)}: prefetch {prefetch} is below the batch's max_size "
                f"{batch.max_size}: a batch could never fill"
            )
        if options.idempotency is not None:
            # The store's claim/complete/release cycle is per message and wraps one run;
            # a batch run would need one claim per item, released or completed item by
            # item after the run (BatchFailure). Not built yet.
            raise HandlerError(
                f"handler {_name(func)}: batch= does not combine with idempotency= (keys "
                "are claimed per message around one run; per-item claims in a batch are "
                "not built): skip processed items inside the handler, e.g. an upsert "
                "keyed by message_id, or the store's claim() and complete() per message"
            )
        if options.delivery != "at_least_once":
            raise HandlerError(
                f"handler {_name(func)}: batch= does not combine with "
                "delivery='at_most_once' (a batch is acked after its run, with one "
                "multi-ack; use a plain at-most-once handler)"
            )
    if options.stream is not None and (
        batch is not None
        or options.idempotency is not None
        or options.circuit_breaker is not None
        or options.delivery != "at_least_once"
    ):
        raise HandlerError(
            f"handler {_name(func)}: a stream handler (offset=, consumer_name=, offsets=, "
            "retry=) does not combine with batch=, idempotency=, circuit_breaker= or "
            "delivery='at_most_once'"
        )
    if not isinstance(options.delivery, str) or options.delivery not in DELIVERY_MODES:
        raise HandlerError(
            f"handler {_name(func)}: delivery must be 'at_least_once' or 'at_most_once', "
            f"not {options.delivery!r}"
        )
    _check_filters(func, "retry_on", options.retry_on)
    _check_filters(func, "dead_letter_on", options.dead_letter_on)
    if both := set(options.retry_on) & set(options.dead_letter_on):
        raise HandlerError(
            f"handler {_name(func)}: {', '.join(sorted(c.__name__ for c in both))} "
            "in both retry_on and dead_letter_on; keep it in one"
        )
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
    message_type: Any = Message if batch is None else list[Message]
    message_param = next((p.name for p in params if hints.get(p.name) == message_type), None)
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
        if batch is not None:
            if typing.get_origin(body_type) is not list:
                raise HandlerError(
                    f"handler {_name(func)}: a batch handler's body must be list[T], "
                    f"not {body_type!r}"
                )
            (body_type,) = typing.get_args(body_type) or (inspect.Parameter.empty,)
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


def _check_filters(func: HandlerFunc, name: str, value: object) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in value
    ):
        raise HandlerError(
            f"handler {_name(func)}: {name} must be a tuple of exception classes, not {value!r}"
        )


def _name(func: HandlerFunc) -> str:
    return str(getattr(func, "__qualname__", repr(func)))


def _seconds(timeout: float | str | None, func: HandlerFunc | str) -> float | None:
    """A decorator's ``timeout=`` in seconds: a number is seconds, a string a duration."""
    if timeout is None:
        return None
    prefix, name = (
        ("Batch: ", "max_wait")
        if isinstance(func, str)
        else (
            f"handler {func.__qualname__}: ",
            "timeout",
        )
    )
    hint = "use seconds (30, 0.5) or a duration such as '250ms', '30s', '5m'"
    # A bare number in a string would be milliseconds to parse_duration (as in topology
    # files) but seconds here: refused rather than guessed.
    bare = isinstance(timeout, str) and timeout.strip().replace(".", "", 1).isdigit()
    if isinstance(timeout, bool) or bare or not isinstance(timeout, int | float | str):
        raise HandlerError(f"{prefix}invalid {name} {timeout!r}: {hint}")
    try:
        value = parse_duration(timeout) / 1000 if isinstance(timeout, str) else float(timeout)
    except ValueError:
        raise HandlerError(f"{prefix}invalid {name} {timeout!r}: {hint}") from None
    if not math.isfinite(value) or value <= 0:
        raise HandlerError(f"{prefix}{name} must be a positive number of seconds, not {timeout!r}")
    return value
