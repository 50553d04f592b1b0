"""A module of handlers with a `Router` and no `App` (``rabbitflow run`` of it is an error)."""

from __future__ import annotations

from rabbitflow import Message, Router

router = Router()
seen: list[tuple[str, dict[str, object]]] = []


@router.handler("payments.charge", prefetch=4)
async def charge(order: dict[str, object], message: Message) -> None:
    seen.append((message.queue, order))
