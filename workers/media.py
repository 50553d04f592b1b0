"""The media pipeline: thumbnails, transcoding and moderation of uploads.

Run: ``rabbitflow run workers.media:app`` (topology: ``topologies/media.yaml``).

Uploads arrive on the ``media.uploads`` headers exchange, routed by their ``format`` and
``kind`` headers; each service publishes its result to ``media.results``, which feeds
``media.processed`` (the storage/CDN step).
"""

from __future__ import annotations

import asyncio

import structlog
from pydantic import BaseModel

from rabbitflow import App, Message, Reject

app = App(topology="topologies/media.yaml")
log = structlog.get_logger("media")


class Upload(BaseModel):
    media_id: str
    url: str
    size_bytes: int


class Result(BaseModel):
    media_id: str
    step: str
    location: str | None = None
    verdict: str | None = None


class StorageUnavailable(Exception):
    """Object storage refused a write; transient."""


@app.handler("media.thumbnail", prefetch=8)
async def thumbnail(upload: Upload, message: Message) -> None:
    if upload.url.startswith("s3://flaky/") and message.attempt == 1:
        raise StorageUnavailable("object storage returned 503")
    await asyncio.sleep(0.01)
    await app.publish(
        "media.results",
        "thumbnail.done",
        Result(media_id=upload.media_id, step="thumbnail", location=f"{upload.url}.thumb.jpg"),
    )


@app.handler("media.transcode", timeout=60)
async def transcode(upload: Upload) -> None:
    # One active consumer (single_active_consumer): transcodes run one at a time, in order.
    await asyncio.sleep(0.05)
    await app.publish(
        "media.results",
        "transcode.done",
        Result(media_id=upload.media_id, step="transcode", location=f"{upload.url}.mp4"),
    )


@app.handler("media.moderation")
async def moderate(upload: Upload, message: Message) -> None:
    if upload.size_bytes <= 0:
        raise Reject("empty file: nothing to moderate")
    verdict = "rejected" if "nsfw" in upload.url else "approved"
    await app.publish(
        "media.results",
        "moderation.done",
        Result(media_id=upload.media_id, step="moderation", verdict=verdict),
    )


@app.handler("media.processed", prefetch=32)
async def store(result: Result) -> None:
    log.info(
        "media step recorded", media_id=result.media_id, step=result.step, verdict=result.verdict
    )
