"""The pure halves of delayed publish and compression (DESIGN.md §8)."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from rabbitflow.amqp.publish import delay_seconds
from rabbitflow.compression import inflate, should_compress
from rabbitflow.errors import BodyDecodeError
from rabbitflow.topology import delay, load_text
from rabbitflow.topology.expand import Role, expand


def test_whole_seconds_rounds_up_and_bounds() -> None:
    assert delay.whole_seconds(0.001) == 1
    assert delay.whole_seconds(1) == 1
    assert delay.whole_seconds(1.2) == 2
    assert delay.whole_seconds(30 * 86400) == 30 * 86400
    assert delay.MAX_DELAY >= 30 * 86400
    for bad in (0, -1, delay.MAX_DELAY + 1):
        with pytest.raises(ValueError, match="delay"):
            delay.whole_seconds(bad)


def test_delay_seconds_accepts_numbers_durations_and_timedeltas() -> None:
    assert delay_seconds("10m") == 600
    assert delay_seconds("250ms") == 0.25
    assert delay_seconds(timedelta(days=30)) == 30 * 86400
    assert delay_seconds(5) == 5.0


def test_headers_encode_the_bits_target_and_due_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    h = delay.headers_for("orders", 5, now)
    bits = [h[delay.bit_header(k)] for k in range(delay.LEVELS)]
    assert bits[:3] == ["1", "0", "1"] and set(bits[3:]) == {"0"}
    assert h[delay.TARGET_HEADER] == "orders"
    assert h[delay.DELAYED_UNTIL] == "2026-01-01T00:00:05.000Z"
    assert not any(k.startswith("x-") for k in delay.ladder_headers())


def test_the_ladder_is_expanded_only_when_an_exchange_opts_in() -> None:
    plain = expand(load_text("version: 1\nexchanges: {a: {type: topic}}\n"))
    assert not any(e.name.startswith("rabbitflow.delay") for e in plain.exchanges)
    decls = expand(
        load_text("version: 1\nexchanges: {a: {type: topic, delayed: true}, b: {type: direct}}\n")
    )
    ladder = [q for q in decls.queues if q.role is Role.DELAY]
    assert len(ladder) == delay.LEVELS
    ttls = sorted(q.arguments["x-message-ttl"] for q in ladder)
    assert ttls == [(1 << k) * 1000 for k in range(delay.LEVELS)]
    assert all(q.arguments["x-queue-type"] == "quorum" for q in ladder)
    assert all(q.arguments["x-dead-letter-strategy"] == "at-least-once" for q in ladder)
    level0 = next(q for q in ladder if q.name == "rabbitflow.delay.level.00")
    assert level0.arguments["x-dead-letter-exchange"] == delay.DELIVER
    deliver = [b for b in decls.bindings if b.source == delay.DELIVER]
    assert [(b.destination, b.destination_type) for b in deliver] == [("a", "exchange")]
    assert {e.name for e in decls.exchanges} >= {delay.DELIVER, delay.entry()}


def test_should_compress() -> None:
    assert should_compress(10, compress=True, min_size=None)
    assert not should_compress(10**9, compress=False, min_size=1)
    assert should_compress(2000, compress=None, min_size=1024)
    assert not should_compress(1024, compress=None, min_size=1024)
    assert not should_compress(10**9, compress=None, min_size=None)


def test_inflate_gzip_deflate_identity_and_limits() -> None:
    assert inflate(gzip.compress(b"abc"), "gzip", limit=10) == b"abc"
    assert inflate(zlib.compress(b"abc"), "deflate", limit=10) == b"abc"
    assert inflate(b"abc", None, limit=1) == b"abc"  # not inflated: no limit applies
    assert inflate(b"abc", "br", limit=10, raw_ok=True) == b"abc"
    with pytest.raises(BodyDecodeError, match="'br' is not decoded"):
        inflate(b"abc", "br", limit=10)
    with pytest.raises(BodyDecodeError, match="inflates past the 100-byte limit"):
        inflate(gzip.compress(b"\0" * 101), "gzip", limit=100)
    with pytest.raises(BodyDecodeError, match="does not decompress as gzip"):
        inflate(b"\x1f\x8bgarbage", "gzip", limit=100)
    with pytest.raises(BodyDecodeError, match="truncated"):
        inflate(gzip.compress(b"x" * 1000)[:-8], "gzip", limit=10_000)
    assert inflate(gzip.compress(b"\0" * 100), "gzip", limit=100) == b"\0" * 100
