"""The handler decorator's options: ``timeout=`` is seconds, or a duration string."""

from __future__ import annotations

from typing import Any

import pytest

from rabbitflow.errors import HandlerError
from rabbitflow.worker.handler import Batch, HandlerOptions, inspect_handler
from rabbitflow.worker.message import Message


def handle(body: bytes) -> None: ...


@pytest.mark.parametrize(
    ("timeout", "seconds"), [(30, 30.0), (0.5, 0.5), ("250ms", 0.25), ("2m", 120.0)]
)
def test_a_number_is_seconds_and_a_string_a_duration(timeout: Any, seconds: float) -> None:
    assert inspect_handler(handle, "q", timeout=timeout).timeout == seconds


@pytest.mark.parametrize("timeout", ["5 minutes", "30", True, [1]])
def test_a_bad_timeout_names_seconds_not_milliseconds(timeout: Any) -> None:
    with pytest.raises(HandlerError) as error:
        inspect_handler(handle, "q", timeout=timeout)
    assert "use seconds (30, 0.5) or a duration such as '250ms', '30s', '5m'" in str(error.value)
    assert "milliseconds" not in str(error.value)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_a_timeout_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(HandlerError, match="timeout must be a positive number of seconds"):
        inspect_handler(handle, "q", timeout=timeout)


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
def test_delivery_accepts_the_two_modes(delivery: Any) -> None:
    spec = inspect_handler(handle, "q", options=HandlerOptions(delivery=delivery))
    assert spec.options.delivery == delivery


@pytest.mark.parametrize("delivery", ["exactly_once", "at-most-once", "", None, 1])
def test_any_other_delivery_is_a_handler_error(delivery: Any) -> None:
    with pytest.raises(HandlerError, match="delivery must be 'at_least_once' or 'at_most_once'"):
        inspect_handler(handle, "q", options=HandlerOptions(delivery=delivery))


def test_app_and_router_handlers_take_delivery() -> None:
    from rabbitflow import App, Router
    from rabbitflow.topology import load_text

    app = App(load_text("version: 1\nqueues: {q: {}}\n"))
    router = Router()
    app.handler("q", delivery="at_most_once")(handle)
    router.handler("r", delivery="at_most_once")(handle)
    assert app.handlers["q"].options.delivery == "at_most_once"
    assert router.handlers["r"].options.delivery == "at_most_once"
    with pytest.raises(HandlerError, match="delivery must be"):
        router.handler("s", delivery="never")(handle)  # type: ignore[arg-type]


def _batch_handler(items: list[int], messages: list[Message]) -> None: ...


def test_a_batch_handler_takes_lists_and_prefetch_defaults_to_twice_max_size() -> None:
    spec = inspect_handler(_batch_handler, "q", options=HandlerOptions(batch=Batch(10, "50ms")))
    assert spec.prefetch == 20
    assert spec.message_param == "messages"
    assert spec.body_type is int  # each body is decoded as the list's item type
    assert spec.options.batch is not None and spec.options.batch.seconds == 0.05


def test_a_batch_prefetch_below_max_size_is_refused() -> None:
    with pytest.raises(HandlerError, match="prefetch 5 is below the batch's max_size 10"):
        inspect_handler(_batch_handler, "q", prefetch=5, options=HandlerOptions(batch=Batch(10)))


def test_a_batch_body_must_be_a_list() -> None:
    with pytest.raises(HandlerError, match=r"body must be list\[T\]"):
        inspect_handler(handle, "q", options=HandlerOptions(batch=Batch(10)))


@pytest.mark.parametrize(("size", "wait"), [(0, 1), (True, 1), (5, 0), (5, "30")])
def test_bad_batch_values_are_handler_errors(size: Any, wait: Any) -> None:
    with pytest.raises(HandlerError, match="Batch"):
        Batch(size, wait)


def test_a_batch_with_idempotency_is_refused_saying_why_and_what_to_do() -> None:
    from rabbitflow.worker.idempotency import MemoryStore

    options = HandlerOptions(batch=Batch(10), idempotency=MemoryStore())
    with pytest.raises(HandlerError) as info:
        inspect_handler(_batch_handler, "q", options=options)
    text = str(info.value)
    assert "batch= does not combine with idempotency=" in text
    assert "per-item claims in a batch are not built" in text
    assert "upsert keyed by message_id" in text


def test_an_at_most_once_batch_is_refused() -> None:
    options = HandlerOptions(batch=Batch(10), delivery="at_most_once")
    with pytest.raises(HandlerError, match="batch= does not combine with delivery='at_most_once'"):
        inspect_handler(_batch_handler, "q", options=options)
