"""The dead-letter filter and keys of the dashboard (pure parts of `book`)."""

from __future__ import annotations

import pytest

from rabbitflow.dashboard.book import Filter, letter_key


def summary(error: str | None, **headers: object) -> dict[str, object]:
    return {"error": error, "failed_at": "t", "headers": headers}


def test_error_filter_is_a_case_insensitive_substring() -> None:
    flt = Filter.parse("gatewaytimeout", None)
    assert flt.accepts(summary("GatewayTimeout: slow"))
    assert not flt.accepts(summary("ValueError"))
    assert not flt.accepts(summary(None))


def test_header_filter_takes_wildcards_and_both_must_pass() -> None:
    flt = Filter.parse("boom", "tenant=t*")
    assert flt.accepts(summary("boom", tenant="t1"))
    assert not flt.accepts(summary("boom", tenant="x1"))
    assert not flt.accepts(summary("boom"))
    assert not flt.accepts(summary("other", tenant="t1"))


def test_an_empty_filter_passes_everything_and_is_falsy() -> None:
    flt = Filter.parse("", " ")
    assert not flt and flt.accepts(summary(None))


def test_a_header_filter_needs_name_equals_pattern() -> None:
    with pytest.raises(ValueError, match="NAME=PATTERN"):
        Filter.parse(None, "tenant")


def test_key_is_the_message_id_or_a_digest() -> None:
    assert letter_key("m-1", summary("e"), b"x") == "m-1"
    digest = letter_key(None, summary("e"), b"x")
    assert digest.startswith("sha256:") and digest == letter_key(None, summary("e"), b"x")
    assert digest != letter_key(None, summary("e"), b"y")
