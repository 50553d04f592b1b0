"""Bodies decoded by annotation; every failure to decode is a `BodyDecodeError`."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from rabbitflow.codec import make_decoder
from rabbitflow.errors import BodyDecodeError


class Order(BaseModel):
    id: int


class Picky(BaseModel):
    id: int

    @field_validator("id")
    @classmethod
    def boom(cls, value: int) -> int:
        raise KeyError("a validator's own bug")


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("body", [b"null", b"[1]", b'"text"', b"3"])
def test_a_dict_handler_requires_a_json_object(body: bytes) -> None:
    with pytest.raises(BodyDecodeError, match="body: Input should be an object"):
        make_decoder(dict)(body, "application/json")


@pytest.mark.parametrize("annotation", [dict, dict[str, Any], Order, inspect.Parameter.empty])
def test_the_same_bad_body_gives_the_same_error_whatever_the_annotation(
    annotation: Any,
) -> None:
    decode = make_decoder(annotation)
    with pytest.raises(BodyDecodeError) as truncated:
        decode(b'{"id": 1,', None)
    assert (
        str(truncated.value)
        == "body is not valid JSON: EOF while parsing a value at line 1 column 9"
    )
    with pytest.raises(BodyDecodeError) as deep:
        decode(DEEP, None)
    assert str(deep.value) == (
        "body is not valid JSON: recursion limit exceeded at line 1 column 202"
    )


def test_untyped_handlers_take_any_json_value() -> None:
    decode = make_decoder(inspect.Parameter.empty)
    assert decode(b"null", None) is None
    assert decode(b"[1]", None) == [1]
    assert make_decoder(dict)(b'{"a": [1]}', None) == {"a": [1]}


def test_a_validator_that_raises_anything_is_a_decode_failure() -> None:
    with pytest.raises(BodyDecodeError, match="body could not be decoded: KeyError"):
        make_decoder(Picky)(b'{"id": 1}', None)
