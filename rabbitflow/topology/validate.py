"""Meaning checks that the schema alone cannot make: references, per-type options, names.

Each check yields `Problem`s located through the `Source` the object came from, so that
`rabbitflow validate` reports schema and reference errors together, with file and line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rabbitflow.errors import Problem
from rabbitflow.topology.names import NameKind, name_problem, short
from rabbitflow.topology.schedule import (
    MAX_DELAY_QUEUES,
    MAX_TTL_MS,
    delay_queue_count,
    distinct_delays,
    longest_delay,
)
from rabbitflow.topology.schema import (
    MAX_AMQP_INT,
    Binding,
    DeadLetterTarget,
    Exchange,
    ExchangeBinding,
    ExchangeType,
    Overflow,
    Queue,
    QueueType,
    RetryPolicy,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    partition_exchange_name,
    partition_queue_names,
    retry_queue_name,
)
from rabbitflow.topology.source import Path, Source

BUILTIN_EXCHANGES = {
    "": ExchangeType.DIRECT,
    "amq.direct": ExchangeType.DIRECT,
    "amq.fanout": ExchangeType.FANOUT,
    "amq.topic": ExchangeType.TOPIC,
    "amq.headers": ExchangeType.HEADERS,
    "amq.match": ExchangeType.HEADERS,
}


T = TypeVar("T")


@dataclass(frozen=True)
class Located(Generic[T]):
    """A parsed declaration and where it was written."""

    value: T
    source: Source
    path: Path

    def problem(self, message: str, *sub: str | int, at_key: bool = True) -> Problem:
        return self.source.problem((*self.path, *sub), message, at_key=at_key)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_topology(
    exchanges: dict[str, Located[Exchange]],
    queues: dict[str, Located[Queue]],
    bindings: list[Located[ExchangeBinding]],
    exchange_names: set[str],
    queue_names: set[str],
) -> list[Problem]:
    """Every meaning problem of a merged topology.

    Args:
        exchanges, queues, bindings: the declarations that passed the schema.
        exchange_names, queue_names: every declared name, including those of objects that
            failed the schema, so a bad exchange does not also make each binding to it an error.
    """
    problems: list[Problem] = []
    for name, ex in exchanges.items():
        problems += _check_name(name, ex, "exchange")
        problems += _check_integers(ex, ex.value.arguments, "arguments")
        alt = ex.value.alternate_exchange
        if alt is not None and not _known_exchange(alt, exchange_names):
            problems.append(
                ex.problem(
                    f"alternate exchange {alt!r} is not declared in any file"
                    + did_you_mean(alt, exchange_names),
                    "alternate_exchange",
                    at_key=False,
                )
            )
    for name, q in queues.items():
        problems += _check_name(name, q, "queue")
        problems += _check_queue_options(q)
        problems += _check_queue_bindings(q, exchanges, exchange_names)
        problems += _check_dead_letter(q, exchange_names)
        problems += _check_partitions(q)
        problems += _check_retry_schedule(q)
        problems += _check_integers(q, q.value.arguments, "arguments")
    for b in bindings:
        for end in ("source", "destination"):
            ref = getattr(b.value, end)
            if not _known_exchange(ref, exchange_names) or ref == "":
                problems.append(
                    b.problem(
                        f"exchange {ref!r} is not declared in any file"
                        + did_you_mean(ref, exchange_names),
                        end,
                        at_key=False,
                    )
                )
        problems += _check_headers_use(b, b.value.source, exchanges, b.value.match, b.value.headers)
        problems += _check_routing_key(b, b.value.routing_key, "routing_key")
        problems += _check_integers(b, b.value.arguments, "arguments")
        problems += _check_integers(b, b.value.headers, "headers")
    problems += _check_generated_names(queues, exchange_names, queue_names)
    return problems


def _known_exchange(name: str, declared: set[str]) -> bool:
    return name in declared or name in BUILTIN_EXCHANGES


def _exchange_type(name: str, exchanges: dict[str, Located[Exchange]]) -> ExchangeType | None:
    if name in exchanges:
        return exchanges[name].value.type
    return BUILTIN_EXCHANGES.get(name)


def _check_name(name: str, obj: Located[Any], kind: NameKind) -> Iterator[Problem]:
    if not name:
        yield obj.problem(f"{kind} name must not be empty")
    elif name.startswith("amq."):
        yield obj.problem(f"{kind} names starting with 'amq.' are reserved by RabbitMQ")
    else:
        problem = name_problem(name, kind)
        if problem is not None:
            yield obj.problem(problem)


def _check_routing_key(obj: Located[Any], key: str | None, *at: str | int) -> Iterator[Problem]:
    problem = None if key is None else name_problem(key, "routing key")
    if problem is not None:
        yield obj.problem(problem, *at, at_key=False)


def _check_integers(obj: Located[Any], value: object, *at: str | int) -> Iterator[Problem]:
    """Integers in raw arguments and headers that no AMQP table can carry."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -MAX_AMQP_INT - 1 <= value <= MAX_AMQP_INT:
        yield obj.problem(f"{value} is outside AMQP's 64-bit integer range", *at, at_key=False)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _check_integers(obj, item, *at, key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _check_integers(obj, item, *at, i)


def _check_retry_schedule(q: Located[Queue]) -> Iterator[Problem]:
    """What the broker would refuse of a retry schedule, computed without building it."""
    retry = q.value.retry
    if retry is None or q.value.type is QueueType.STREAM:
        return
    retry_no, longest = longest_delay(retry)
    if longest > MAX_TTL_MS:
        wait = f"{longest} ms" if longest < 2**64 else "more than 2^64 ms"
        yield q.problem(
            f"retry {retry_no} would wait {wait}, above the broker's limit of {MAX_TTL_MS} ms "
            "(about 49 days); set max_delay or an explicit delays: list",
            "retry",
        )
    count = delay_queue_count(retry)
    if count > MAX_DELAY_QUEUES:
        needs = f"{count}" if count <= 10_000 else "more than 10000"
        yield q.problem(
            f"this retry schedule needs {needs} delay queues (one per distinct delay); at "
            f"most {MAX_DELAY_QUEUES} are allowed: set max_delay or an explicit delays: list",
            "retry",
        )


# option → the queue types it is allowed on, when set to anything but its default
_TYPE_ONLY: dict[str, tuple[QueueType, ...]] = {
    "exclusive": (QueueType.CLASSIC,),
    "auto_delete": (QueueType.CLASSIC,),
    "max_priority": (QueueType.CLASSIC,),
    "delivery_limit": (QueueType.QUORUM,),
    "max_age": (QueueType.STREAM,),
    "retry": (QueueType.CLASSIC, QueueType.QUORUM),
    "message_ttl": (QueueType.CLASSIC, QueueType.QUORUM),
    "overflow": (QueueType.CLASSIC, QueueType.QUORUM),
    "single_active_consumer": (QueueType.CLASSIC, QueueType.QUORUM),
    "partitions": (QueueType.CLASSIC, QueueType.QUORUM),
}


def _is_unset(value: object) -> bool:
    # Identity, not equality: 0 == False, and `delivery_limit: 0` is a setting.
    return value is None or value is False


def _check_queue_options(q: Located[Queue]) -> Iterator[Problem]:
    queue = q.value
    set_fields = queue.model_fields_set
    for option, types in _TYPE_ONLY.items():
        value = getattr(queue, option)
        if option in set_fields and not _is_unset(value) and queue.type not in types:
            allowed = " and ".join(t.value for t in types)
            yield q.problem(f"{option} is for {allowed} queues, not {queue.type.value}", option)
    if queue.type is QueueType.STREAM and not _is_unset(queue.dead_letter):
        yield q.problem(
            "a stream queue takes no dead_letter (nothing is ever rejected from a stream)",
            "dead_letter",
        )
    if queue.overflow is Overflow.REJECT_PUBLISH_DLX and queue.type is not QueueType.CLASSIC:
        yield q.problem(
            "overflow reject-publish-dlx is for classic queues only; use reject-publish",
            "overflow",
            at_key=False,
        )
    if queue.type is not QueueType.CLASSIC and not queue.durable:
        yield q.problem(f"{queue.type.value} queues are always durable", "durable")
    retry = queue.retry
    if retry is not None and retry.delays is not None:
        mixed = sorted({"backoff", "delay", "multiplier"} & retry.model_fields_set)
        if mixed:
            yield q.problem(
                f"delays is an explicit schedule; remove {', '.join(mixed)}", "retry", mixed[0]
            )
    if (
        retry is not None
        and "multiplier" in retry.model_fields_set
        and retry.backoff.value != "exponential"
    ):
        yield q.problem(
            f"multiplier applies to backoff: exponential, not {retry.backoff.value}",
            "retry",
            "multiplier",
        )


def _check_queue_bindings(
    q: Located[Queue], exchanges: dict[str, Located[Exchange]], names: set[str]
) -> Iterator[Problem]:
    for i, binding in enumerate(q.value.bind):
        if binding.exchange == "":
            yield q.problem(
                "the default exchange routes by queue name and takes no bindings",
                "bind",
                i,
                "exchange",
                at_key=False,
            )
        elif not _known_exchange(binding.exchange, names):
            yield q.problem(
                f"exchange {binding.exchange!r} is not declared in any file"
                + did_you_mean(binding.exchange, names),
                "bind",
                i,
                "exchange",
                at_key=False,
            )
        if binding.routing_key is not None and binding.routing_keys is not None:
            yield q.problem("give routing_key or routing_keys, not both", "bind", i, "routing_keys")
        yield from _check_routing_key(q, binding.routing_key, "bind", i, "routing_key")
        for k, key in enumerate(binding.routing_keys or []):
            yield from _check_routing_key(q, key, "bind", i, "routing_keys", k)
        yield from _check_integers(q, binding.arguments, "bind", i, "arguments")
        yield from _check_integers(q, binding.headers, "bind", i, "headers")
        sub = Located(binding, q.source, (*q.path, "bind", i))
        yield from _check_headers_use(
            sub, binding.exchange, exchanges, binding.match, binding.headers
        )


def _check_headers_use(
    b: Located[Binding] | Located[ExchangeBinding],
    exchange: str,
    exchanges: dict[str, Located[Exchange]],
    match: str | None,
    headers: object,
) -> Iterator[Problem]:
    kind = _exchange_type(exchange, exchanges)
    if kind is None or kind is ExchangeType.HEADERS:
        return
    for key, value in (("match", match), ("headers", headers)):
        if value is not None:
            yield b.problem(
                f"{key} applies to headers exchanges; {exchange!r} is {kind.value}", key
            )


def _check_dead_letter(q: Located[Queue], names: set[str]) -> Iterator[Problem]:
    target = q.value.dead_letter
    if isinstance(target, DeadLetterTarget):
        yield from _check_routing_key(q, target.routing_key, "dead_letter", "routing_key")
    if isinstance(target, DeadLetterTarget) and not _known_exchange(target.exchange, names):
        yield q.problem(
            f"dead-letter exchange {target.exchange!r} is not declared in any "
            "file" + did_you_mean(target.exchange, names),
            "dead_letter",
            "exchange",
            at_key=False,
        )


def _check_partitions(q: Located[Queue]) -> Iterator[Problem]:
    queue = q.value
    if queue.partitions is None:
        return
    for option in ("exclusive", "auto_delete"):
        if getattr(queue, option):
            yield q.problem(
                f"partition queues are shared by every worker; {option} "
                "cannot be used with partitions",
                option,
            )
    if "single_active_consumer" in queue.model_fields_set and not queue.single_active_consumer:
        yield q.problem(
            "partitions always use a single active consumer per partition; "
            "remove single_active_consumer: false",
            "single_active_consumer",
        )


def _made_queues(name: str, queue: Queue) -> list[tuple[str, str]]:
    """(generated queue, the option generating it) for one declared queue."""
    made: list[tuple[str, str]] = []
    delays = _delays(queue.retry)
    if queue.partitions is not None:
        for part in partition_queue_names(name, queue.partitions.count):
            made.append((part, "partitions"))
            made += [(retry_queue_name(part, d), "retry") for d in delays]
    else:
        made += [(retry_queue_name(name, d), "retry") for d in delays]
    if queue.dead_letters is True:
        made.append((dead_letter_queue_name(name), "dead_letter"))
    return made


def _delays(retry: RetryPolicy | None) -> list[int]:
    """The distinct delays, or none when there are too many (`_check_retry_schedule`
    reports that) or one is beyond the broker's limit."""
    if retry is None:
        return []
    delays = distinct_delays(retry)
    if len(delays) > MAX_DELAY_QUEUES or any(d > MAX_TTL_MS for d in delays):
        return []
    return delays


def _made_exchanges(name: str, queue: Queue) -> list[tuple[str, str]]:
    made: list[tuple[str, str]] = []
    if queue.dead_letters is True:
        made.append((dead_letter_exchange_name(name), "dead_letter"))
    if queue.partitions is not None:
        made.append((partition_exchange_name(name), "partitions"))
    return made


def _check_generated_lengths(
    q: Located[Queue], name: str, made_queues: list[tuple[str, str]]
) -> Iterator[Problem]:
    """Generated names the client could not send: a long queue name's ``Q.retry.1s``."""
    if name_problem(name, "queue") is not None:
        return  # the declared name is reported already
    made: list[tuple[str, str, NameKind]] = [(n, o, "queue") for n, o in made_queues]
    made += [(n, o, "exchange") for n, o in _made_exchanges(name, q.value)]
    for generated, option, kind in made:
        problem = name_problem(generated, kind)
        if problem is not None:
            at = (option,) if option in q.value.model_fields_set else ()
            yield q.problem(
                f"{option} generates {kind} {short(generated)}: {problem}; shorten the queue name",
                *at,
            )
            return  # one line per queue: every longer name fails the same way


def _check_generated_names(
    queues: dict[str, Located[Queue]], exchange_names: set[str], queue_names: set[str]
) -> Iterator[Problem]:
    generated: dict[str, str] = {}  # generated queue name → the queue that generates it
    for name, q in queues.items():
        queue = q.value
        made_queues = _made_queues(name, queue)
        yield from _check_generated_lengths(q, name, made_queues)
        if queue.dead_letters is True:
            dlx = dead_letter_exchange_name(name)
            if dlx in exchange_names:
                yield q.problem(
                    f"dead_letter generates exchange {dlx!r}, which is also "
                    "declared; rename one or use dead_letter: {exchange: ...}",
                    "dead_letter" if "dead_letter" in queue.model_fields_set else "retry",
                )
        if queue.partitions is not None and partition_exchange_name(name) in exchange_names:
            yield q.problem(
                f"partitions generates exchange {partition_exchange_name(name)!r}, "
                "which is also declared; rename one",
                "partitions",
            )
        for made, option in made_queues:
            if made in queue_names:
                at = (option,) if option in queue.model_fields_set else ()
                yield q.problem(f"{option} generates queue {made!r}, which is also declared", *at)
            elif made in generated:
                yield q.problem(
                    f"{option} generates queue {made!r}, which queue "
                    f"{generated[made]!r} generates too",
                    option,
                )
            generated[made] = name


def queue_problems(queue: Queue) -> list[str]:
    """The meaning problems of one queue's own options (per-type options, retry), as
    messages: what `import` checks before writing a queue with schema fields."""
    located = Located(queue, Source("<queue>"), ())
    return [p.message for p in (*_check_queue_options(located), *_check_partitions(located))]
