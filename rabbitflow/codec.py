"""Bodies in and out: a decoder built once per handler from its annotation, and the
encoding of published bodies.

Only JSON, text and raw bytes are ever decoded: a body of another content type (pickle
included) reaches a handler only as raw ``bytes``, never deserialized.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json

from rabbitflow.errors import BodyDecodeError

Decoder = Callable[[bytes, str | None], Any]
"""Turns (body, content type) into the handler's first argument or raises BodyDecodeError."""

JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return True  # many producers send JSON without a content type
    base = content_type.split(";", 1)[0].strip().lower()
    return base in (JSON, TEXT) or base.endswith("+json")


def _is_text_type(content_type: str | None) -> bool:
    if not content_type:
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return base.startswith("text/") or base == JSON or base.endswith("+json")


def _refuse(content_type: str | None, wanted: str) -> BodyDecodeError:
    return BodyDecodeError(
        f"content type {content_type!r} is not decoded as {wanted}; "
        "annotate the body parameter as bytes to receive it raw"
    )


def _decode_bytes(body: bytes, content_type: str | None) -> bytes:
    return body


def _decode_str(body: bytes, content_type: str | None) -> str:
    if not _is_text_type(content_type):
        raise _refuse(content_type, "text")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyDecodeError(f"body is not valid UTF-8: {exc}") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        if err["type"] == "json_invalid":
            # jiter's own words (position included), e.g. "EOF while parsing a value at
            # line 1 column 8" or "recursion limit exceeded at line 1 column 202".
            return f"body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


_ANY_JSON: TypeAdapter[Any] = TypeAdapter(Any)
_JSON_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def make_decoder(annotation: Any) -> Decoder:
    """Build the decoder for a handler's body parameter, once.

    ``bytes`` → raw; ``str`` → UTF-8; no annotation, ``Any``, ``object`` → any JSON value;
    ``dict`` → a JSON object; a pydantic model or any other type → JSON validated by
    pydantic. Every JSON body is parsed by pydantic's parser, so the same bad body gives
    the same error whatever the annotation; any failure to decode (nesting deeper than
    200, a validator that raises) is a `BodyDecodeError`: dead-lettered, never retried.
    """
    if annotation is bytes:
        return _decode_bytes
    if annotation is str:
        return _decode_str
    validate: Callable[[bytes], Any]
    if annotation in (inspect.Parameter.empty, Any, object):
        validate = _ANY_JSON.validate_json
    elif annotation is dict:
        validate = _JSON_OBJECT.validate_json
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        validate = annotation.model_validate_json
    else:
        validate = TypeAdapter(annotation).validate_json

    def decode(body: bytes, content_type: str | None) -> Any:
        if not _is_json_type(content_type):
            raise _refuse(content_type, "JSON")
        try:
            return validate(body)
        except ValidationError as exc:
            raise BodyDecodeError(_validation_message(exc)) from None
        except Exception as exc:  # a user's validator, or anything else: still the body's
            raise BodyDecodeError(
                f"body could not be decoded: {type(exc).__name__}: {exc}"
            ) from None

    return decode


def encode(body: object) -> tuple[bytes, str]:
    """Encode a body to publish: (bytes, content type).

    A pydantic model or any JSON-able value → JSON; ``bytes`` as is; ``str`` as UTF-8.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), BINARY
    if isinstance(body, str):
        return body.encode("utf-8"), TEXT
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode(), JSON
    return to_json(body), JSON
