"""Idempotency as a middleware of the delivery pipeline: outermost, so a message whose
key was processed before reaches neither the user's middlewares nor the handler."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rabbitflow.worker.hooks import message_fields
from rabbitflow.worker.idempotency.base import IdempotencyStore, acquire
from rabbitflow.worker.message import Message
from rabbitflow.worker.pipeline import CallNext, Duplicate, Unsettleable


class IdempotencyMiddleware:
    """Claims each message's key before the run, completes it after a success, releases
    it after a failure (so the retry may run)."""

    def __init__(
        self,
        store: IdempotencyStore,
        key_of: Callable[[Message], str | None] | None,
        *,
        lease: float,
        log: Any,
    ) -> None:
        self.store = store
        self.key_of = key_of or _message_id
        self.lease = lease
        self._log = log

    async def __call__(self, message: Message, call_next: CallNext) -> Any:
        key = self.key_of(message)
        if key is None:
            return await call_next(message)
        if not await acquire(
            self.store, key, lease=self.lease, poll_interval=0.05, max_wait=self.lease
        ):
            self._log.info("duplicate skipped", **message_fields(message, "ack", None), key=key)
            raise Duplicate(key)
        try:
            result = await call_next(message)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.release(key))
            raise
        except BaseException:
            await self._finish(self.store.release(key))
            raise
        # Recorded before the ack: a crash in between redelivers a message the store
        # already knows, which is then skipped.
        await self._finish(self.store.complete(key))
        return result

    async def _finish(self, step: Awaitable[object]) -> None:
        # A store that fails here leaves the key in a state no outcome can repair: the
        # consumer's last resort takes the delivery (nack, the broker dead-letters it).
        try:
            await step
        except Exception as exc:
            raise Unsettleable(exc) from exc


def _message_id(message: Message) -> str | None:
    return message.message_id


__all__ = ["IdempotencyMiddleware"]
