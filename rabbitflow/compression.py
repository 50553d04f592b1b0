"""Body compression (DESIGN.md §8): gzip on publish, gzip/deflate decoding on consume with
the inflated size bounded, so a small "gzip bomb" never grows past ``limit`` in memory."""

from __future__ import annotations

import gzip
import zlib

from rabbitflow.errors import BodyDecodeError

GZIP = "gzip"
DEFLATE = "deflate"
IDENTITY = ("", "identity")
_CHUNK = 64 * 1024


def should_compress(size: int, *, compress: bool | None, min_size: int | None) -> bool:
    """``compress=True`` always, ``False`` never, ``None`` above ``min_size`` (if set)."""
    if compress is not None:
        return compress
    return min_size is not None and min_size > 0 and size > min_size


def gzip_body(data: bytes) -> bytes:
    """The body gzipped (level 6: most of the gain at a fraction of level 9's cost)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def inflate(body: bytes, encoding: str | None, *, limit: int, raw_ok: bool = False) -> bytes:
    """The body with its ``content_encoding`` undone.

    Decompresses in bounded steps: never more than ``limit + 64 KiB`` of output is held.

    Args:
        encoding: the message's ``content_encoding`` (``gzip``, ``deflate``, none).
        limit: the largest inflated size (``max_message_size``).
        raw_ok: the handler takes ``bytes``: an unknown encoding is handed over as is.

    Raises:
        BodyDecodeError: a body that does not decompress, inflates past ``limit``, or has
            another encoding (unless ``raw_ok``).
    """
    name = (encoding or "").strip().lower()
    if name in IDENTITY:
        return body
    if name == GZIP:
        wbits = 16 + zlib.MAX_WBITS
    elif name == DEFLATE:
        wbits = 32 + zlib.MAX_WBITS  # zlib stream (or gzip, detected from the header)
    elif raw_ok:
        return body
    else:
        raise BodyDecodeError(
            f"content encoding {encoding!r} is not decoded (only gzip and deflate); "
            "annotate the body parameter as bytes to receive it raw"
        )
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            chunk = inflater.decompress(data, _CHUNK)
            size += len(chunk)
            if size > limit:
                raise _too_large(name, len(body), limit)
            parts.append(chunk)
            data = inflater.unconsumed_tail
        while not inflater.eof:
            chunk = inflater.decompress(b"", _CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _too_large(name, len(body), limit)
            parts.append(chunk)
    except zlib.error as exc:
        raise BodyDecodeError(f"body does not decompress as {name}: {exc}") from None
    if not inflater.eof:
        raise BodyDecodeError(f"body does not decompress as {name}: the stream is truncated")
    return b"".join(parts)


def _too_large(name: str, size: int, limit: int) -> BodyDecodeError:
    return BodyDecodeError(
        f"{name} body of {size} bytes inflates past the {limit}-byte limit "
        "(RABBITFLOW_MAX_MESSAGE_SIZE); not decompressed"
    )
