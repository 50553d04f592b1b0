"""The handler decorator's options: ``timeout=`` is seconds, or a duration string."""

from __future__ import annotations

from typing import Any

import pytest

from rabbitflow.errors import HandlerError
from rabbitflow.worker.handler import HandlerOptions, inspect_handler


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
