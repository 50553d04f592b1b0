"""Logging is configured once, and never over an application's own configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from rabbitflow.logs import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_json_format_prints_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert configure_logging("json", "INFO") is True
    structlog.get_logger().info("declared", queue="payments.charge")
    event = json.loads(capsys.readouterr().err.strip())
    assert event["event"] == "declared"
    assert event["queue"] == "payments.charge"
    assert event["level"] == "info"


def test_level_filters_lower_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "WARNING")
    structlog.get_logger().info("hidden")
    assert capsys.readouterr().err == ""


def test_an_existing_configuration_is_left_alone() -> None:
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    assert configure_logging("json") is False
    processors = structlog.get_config()["processors"]
    assert isinstance(processors[0], structlog.processors.KeyValueRenderer)


def test_without_a_terminal_the_default_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(None)
    structlog.get_logger().warning("x")
    assert json.loads(capsys.readouterr().err.strip())["event"] == "x"
