"""A small client of the RabbitMQ management HTTP API (httpx), behind a Protocol.

Only what the operations commands need: a vhost's definitions (exchanges, queues,
bindings as the broker holds them) and its queues with their counters and rates.
Pure logic (plan, status rows) takes a `ManagementApi`, so unit tests pass a fake.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from rabbitflow.errors import ManagementError, ManagementUnavailable
from rabbitflow.settings import Settings, mask_url

JsonObject = dict[str, Any]
"""A JSON object as the management API returns it."""

ENABLE_HINT = "is the management plugin enabled? rabbitmq-plugins enable rabbitmq_management"


class ManagementApi(Protocol):
    """What rabbitflow asks of the management API; a fake implements it in unit tests."""

    async def definitions(self, vhost: str) -> JsonObject:
        """The vhost's definitions: ``exchanges``, ``queues``, ``bindings`` (no vhost keys)."""
        ...

    async def queues(self, vhost: str) -> list[JsonObject]:
        """The vhost's queues with their counters and ``message_stats`` rates."""
        ...


class HttpManagement:
    """`ManagementApi` over HTTP; use as ``async with`` so the connection pool closes."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Args:
        base_url: ``http(s)://host:port`` (with or without ``/api``), no credentials.
        username: the management user.
        password: its password; never printed.
        timeout: seconds allowed for connecting and for each response.
        transport: an httpx transport (unit tests pass a `httpx.MockTransport`).
        """
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/api") else root + "/api"
        self.username = username
        self._client = httpx.AsyncClient(
            base_url=self.base_url, auth=(username, password), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    async def definitions(self, vhost: str) -> JsonObject:
        """GET ``/api/definitions/{vhost}``."""
        body = await self._get(f"/definitions/{_quote(vhost)}", vhost)
        if not isinstance(body, dict):
            raise ManagementError(f"unexpected answer from {self.base_url}/definitions")
        return body

    async def queues(self, vhost: str) -> list[JsonObject]:
        """GET ``/api/queues/{vhost}``."""
        body = await self._get(f"/queues/{_quote(vhost)}", vhost)
        if not isinstance(body, list):
            raise ManagementError(f"unexpected answer from {self.base_url}/queues")
        return body

    async def overview(self) -> JsonObject:
        """GET ``/api/overview`` (``rabbitmq_version``, ``management_version`` …)."""
        body = await self._get("/overview", "/")
        if not isinstance(body, dict):
            raise ManagementError(f"unexpected answer from {self.base_url}/overview")
        return body

    async def policies(self, vhost: str) -> list[JsonObject]:
        """GET ``/api/policies/{vhost}``."""
        body = await self._get(f"/policies/{_quote(vhost)}", vhost)
        if not isinstance(body, list):
            raise ManagementError(f"unexpected answer from {self.base_url}/policies")
        return body

    async def put_policy(self, vhost: str, name: str, document: Mapping[str, Any]) -> None:
        """PUT ``/api/policies/{vhost}/{name}``: create or replace a policy."""
        await self._request(
            "PUT", f"/policies/{_quote(vhost)}/{_quote(name)}", vhost, json=document
        )

    async def queue(self, vhost: str, name: str) -> JsonObject | None:
        """GET ``/api/queues/{vhost}/{name}`` (with ``consumer_details``); None when missing."""
        try:
            body = await self._get(f"/queues/{_quote(vhost)}/{_quote(name)}", vhost)
        except ManagementError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise
        return body if isinstance(body, dict) else None

    async def queue_bindings(self, vhost: str, name: str) -> list[JsonObject]:
        """GET ``/api/queues/{vhost}/{name}/bindings``: the bindings to the queue."""
        body = await self._get(f"/queues/{_quote(vhost)}/{_quote(name)}/bindings", vhost)
        return body if isinstance(body, list) else []

    async def connection(self, name: str) -> JsonObject | None:
        """GET ``/api/connections/{name}`` (``client_properties``); None when gone."""
        try:
            body = await self._get(f"/connections/{_quote(name)}", "/")
        except ManagementError:
            return None
        return body if isinstance(body, dict) else None

    async def import_definitions(self, vhost: str, definitions: Mapping[str, Any]) -> None:
        """POST ``/api/definitions/{vhost}``: create the objects the definitions hold."""
        await self._request("POST", f"/definitions/{_quote(vhost)}", vhost, json=definitions)

    async def optional(self, path: str) -> Any:
        """GET ``/api{path}``; None when the broker does not serve it (older versions)."""
        try:
            response = await self._client.get(path)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def _get(self, path: str, vhost: str) -> Any:
        response = await self._request("GET", path, vhost)
        return response.json()

    async def _request(
        self, method: str, path: str, vhost: str, json: Any = None
    ) -> httpx.Response:
        where = mask_url(self.base_url)
        try:
            response = await self._client.request(method, path, json=json)
        except httpx.TimeoutException:
            raise ManagementUnavailable(
                f"management API at {where} did not answer in time; {ENABLE_HINT}"
            ) from None
        except httpx.HTTPError as exc:
            raise ManagementUnavailable(
                f"management API at {where} is not reachable ({type(exc).__name__}); {ENABLE_HINT}"
            ) from None
        if response.status_code == 401:
            raise ManagementError(
                f"management API at {where} refused user "
                f"{self.username!r} (check RABBITFLOW_MANAGEMENT_URL "
                "or the credentials of the AMQP URL)"
            )
        if response.status_code in (400, 404) and _names_vhost(response):
            raise ManagementError(f"vhost {vhost!r} does not exist on the broker")
        if response.status_code >= 400:
            raise ManagementError(
                f"management API {method} {path} answered "
                f"{response.status_code}: {_reason(response)}"
            )
        return response


def management_client(settings: Settings, *, timeout: float | None = None) -> HttpManagement:
    """The management client for these settings.

    The credentials come from ``RABBITFLOW_MANAGEMENT_URL`` when it carries them, else
    from the first AMQP URL (``guest:guest`` when neither names a user).
    """
    base, user, password = management_endpoint(settings.management_url, settings.urls)
    return HttpManagement(
        base, user, password, timeout=timeout if timeout is not None else settings.connect_timeout
    )


def management_endpoint(management_url: str, amqp_urls: list[str]) -> tuple[str, str, str]:
    """Split the management URL into (URL without credentials, user, password)."""
    parts = urlsplit(management_url)
    if parts.scheme not in ("http", "https"):
        raise ManagementError(
            f"not an HTTP URL: {mask_url(management_url)} "
            "(RABBITFLOW_MANAGEMENT_URL, e.g. http://localhost:15672)"
        )
    host = parts.hostname or "localhost"
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    base = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.username is not None:
        return base, unquote(parts.username), unquote(parts.password or "")
    amqp = urlsplit(amqp_urls[0]) if amqp_urls else None
    if amqp is not None and amqp.username is not None:
        return base, unquote(amqp.username), unquote(amqp.password or "")
    return base, "guest", "guest"


def _quote(vhost: str) -> str:
    return quote(vhost, safe="")


def _names_vhost(response: httpx.Response) -> bool:
    # /api/definitions/{vhost} answers 400 vhost_not_found, /api/queues/{vhost} a bare 404.
    reason = _reason(response).lower()
    return "vhost" in reason or (
        response.status_code == 404 and response.request.url.path.count("/") <= 3
    )


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].replace("\n", " ")
    if isinstance(body, dict):
        # Validation errors come HTML-escaped and on several lines ("Validation failed\n\n…").
        text = html.unescape(str(body.get("reason") or body.get("error") or body))
        return " ".join(text.split())
    return str(body)[:200]
