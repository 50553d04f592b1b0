"""The page and its JSON API.

``GET /`` the page · ``GET /api/status`` every figure · ``GET /api/dead-letters`` a page
of one queue's dead letters · ``GET /api/traceback`` one traceback · ``POST /api/replay``
and ``POST /api/purge`` the actions (refused with ``--read-only``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from rabbitflow.dashboard.book import DeadLetterBook, Filter
from rabbitflow.dashboard.layout import node_names, to_svg
from rabbitflow.dashboard.page import render_page
from rabbitflow.dashboard.source import Source
from rabbitflow.errors import RabbitflowError
from rabbitflow.settings import mask_url
from rabbitflow.topology.dead_letters import DeadLetterQueue

PAGE_SIZE = 50
MAX_PAGE = 500
MAX_KEYS = 10_000


class Problem(Exception):
    """A request the API refuses, with its status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Views:
    """The endpoints, sharing the source, the dead-letter book and the mode."""

    def __init__(self, source: Source, book: DeadLetterBook, *, read_only: bool) -> None:
        self.source = source
        self.book = book
        self.read_only = read_only

    async def page(self, request: Request) -> Response:
        view = await self.source.view(refresh=True)
        svg = to_svg(view.graph, node_names(view.graph.nodes))
        html = render_page(
            svg=svg,
            broker=self.source.broker,
            vhost=self.source.vhost,
            origin=view.origin,
            csrf=request.state.access.csrf,
            read_only=self.read_only,
        )
        return HTMLResponse(html)

    async def status(self, request: Request) -> Response:
        return _json(await self.source.status() | {"read_only": self.read_only})

    async def dead_letters(self, request: Request) -> Response:
        q = request.query_params
        dlq = await self._dlq(q.get("queue"))
        offset = _int(q.get("offset"), 0, "offset")
        limit = min(_int(q.get("limit"), PAGE_SIZE, "limit"), MAX_PAGE)
        page = await self.book.page(
            dlq, offset, max(limit, 1), _filter(q.get("error"), q.get("header"))
        )
        return _json(page)

    async def traceback(self, request: Request) -> Response:
        dlq = await self._dlq(request.query_params.get("queue"))
        key = request.query_params.get("key") or ""
        text = await self.book.traceback(dlq, key)
        if text is None:
            raise Problem(404, f"no traceback for dead letter {key!r} (replayed or purged?)")
        return _json({"key": key, "traceback": text})

    async def replay(self, request: Request) -> Response:
        body = await self._action(request)
        dlq = await self._dlq(body.get("queue"))
        keys = body.get("keys")
        if keys is not None:
            if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
                raise Problem(400, "keys: a list of 1 to 10000 dead-letter keys")
            chosen: frozenset[str] | None = frozenset(str(k) for k in keys)
        elif body.get("all") is True:
            chosen = None
        else:
            raise Problem(400, 'say what to replay: "keys": [...] or "all": true')
        flt = _filter(body.get("error"), body.get("header"))
        result = await self.book.replay(
            dlq, keys=chosen, flt=flt, publish_timeout=self.source.settings.publish_timeout
        )
        text = (
            f"moved {result.moved} dead letter{'s' * (result.moved != 1)} back to {dlq.work_queue}"
        )
        if result.failed:
            text += f"; {len(result.failed)} could not be moved and stay in {dlq.name}"
        return _json(
            {
                "queue": dlq.work_queue,
                "moved": result.moved,
                "skipped": result.skipped,
                "failed": result.failed[:20],
                "message": text,
            }
        )

    async def purge(self, request: Request) -> Response:
        body = await self._action(request)
        dlq = await self._dlq(body.get("queue"))
        count = await self.book.purge(dlq)
        return _json(
            {
                "queue": dlq.work_queue,
                "purged": count,
                "message": f"purged {count} dead letter{'s' * (count != 1)} from {dlq.name}",
            }
        )

    async def _action(self, request: Request) -> dict[str, Any]:
        if self.read_only:
            raise Problem(403, "read-only dashboard: actions are off (--read-only)")
        if "application/json" not in request.headers.get("content-type", ""):
            raise Problem(415, "send JSON (Content-Type: application/json)")
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Problem(400, "the body must be a JSON object")
        return body

    async def _dlq(self, queue: object) -> DeadLetterQueue:
        view = await self.source.view()
        if not isinstance(queue, str) or not queue:
            raise Problem(400, "queue: the work queue's name is required")
        dlq = view.dead_letter_queues.get(queue)
        if dlq is None:
            raise Problem(404, f"queue {queue!r} keeps no dead letters in this topology")
        return dlq


async def problem(request: Request, exc: Exception) -> Response:
    """`Problem` and `RabbitflowError` as JSON errors (the message masked)."""
    if isinstance(exc, Problem):
        return _json({"error": str(exc)}, exc.status)
    if isinstance(exc, RabbitflowError):
        return _json({"error": mask_url(str(exc))}, 502)
    raise exc


def _filter(error: object, header: object) -> Filter:
    try:
        return Filter.parse(
            error if isinstance(error, str) else None, header if isinstance(header, str) else None
        )
    except ValueError as exc:
        raise Problem(400, str(exc)) from None


def _int(value: str | None, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise Problem(400, f"{name}: expected a whole number, got {value!r}") from None
    if number < 0:
        raise Problem(400, f"{name}: must not be negative")
    return number


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
