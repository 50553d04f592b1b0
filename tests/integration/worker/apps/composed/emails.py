"""A second module of handlers: a sync one, registered on a `Router` of its own."""

from __future__ import annotations

from rabbitflow import Router

router = Router()
seen: list[dict[str, object]] = []


@router.handler("emails.send")
def send(email: dict[str, object]) -> None:
    seen.append(email)
