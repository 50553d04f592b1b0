"""The media pipeline and the pricing RPC service, tested with the pytest plugin."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rabbitflow.testing import run_app
from workers import media, rpc

UPLOAD = {"media_id": "m-1", "url": "s3://media/cat.mp4", "size_bytes": 1024}


async def test_an_mp4_upload_gets_a_thumbnail_recorded(memory_url: str) -> None:
    async with run_app(media.app, memory_url) as harness:
        await harness.publish("media.uploads", "", UPLOAD, headers={"format": "mp4"})
        await harness.wait_idle()
    assert len(harness.calls_of("media.thumbnail")) == 1
    assert harness.calls_of("media.transcode") == []
    [recorded] = harness.calls_of("media.processed")
    assert (recorded.body.step, recorded.body.location) == (
        "thumbnail",
        "s3://media/cat.mp4.thumb.jpg",
    )


async def test_a_video_is_transcoded_and_moderated(memory_url: str) -> None:
    async with run_app(media.app, memory_url) as harness:
        await harness.publish(
            "media.uploads",
            "",
            {**UPLOAD, "url": "s3://media/nsfw.mkv"},
            headers={"format": "mkv", "kind": "video"},
        )
        await harness.wait_idle()
    steps = sorted((c.body.step, c.body.verdict) for c in harness.calls_of("media.processed"))
    assert steps == [("moderation", "rejected"), ("transcode", None)]


async def test_flaky_storage_is_retried_and_an_empty_file_dead_lettered(memory_url: str) -> None:
    async with run_app(media.app, memory_url) as harness:
        await harness.publish(
            "media.uploads", "", {**UPLOAD, "url": "s3://flaky/a.mp4"}, headers={"format": "mp4"}
        )
        await harness.publish(
            "media.uploads", "", {**UPLOAD, "size_bytes": 0}, headers={"kind": "video"}
        )
        await harness.wait_idle()
        (dead,) = await harness.dead_letters("media.moderation")
    assert [c.outcome for c in harness.calls_of("media.thumbnail")] == ["retry", "ack"]
    assert dead.error == "Reject: empty file: nothing to moderate"


async def test_pricing_answers_requests(memory_url: str) -> None:
    async with run_app(rpc.app, memory_url):
        quote = await rpc.app.request(
            "rpc", "pricing.quote", {"sku": "lamp", "quantity": 100}, model=rpc.Quote
        )
    assert quote.total == Decimal("3591.00")  # 10 % off from 100 pieces


@pytest.fixture
def rabbitflow_topology() -> str:
    return "topologies/rpc.yaml"


@pytest.mark.broker
async def test_pricing_answers_requests_on_rabbitmq(rabbitflow_vhost: Any) -> None:
    async with run_app(rpc.app, rabbitflow_vhost.url):
        quote = await rpc.app.request(
            "rpc", "pricing.quote", {"sku": "book", "quantity": 2}, model=rpc.Quote
        )
    assert quote.total == Decimal("25.00")
