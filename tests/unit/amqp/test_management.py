"""The management HTTP client, over httpx's mock transport (no sockets)."""

from __future__ import annotations

import httpx
import pytest

from rabbitflow.amqp.management import HttpManagement, management_client, management_endpoint
from rabbitflow.errors import ManagementError, ManagementUnavailable
from rabbitflow.settings import Settings


def test_credentials_come_from_the_amqp_url_unless_the_management_url_has_them() -> None:
    amqp = ["amqp://ops:p%40ss@broker:5672/prod"]
    assert management_endpoint("http://broker:15672", amqp) == (
        "http://broker:15672",
        "ops",
        "p@ss",
    )
    assert management_endpoint("https://admin:x@broker:443/rmq", amqp) == (
        "https://broker:443/rmq",
        "admin",
        "x",
    )
    assert management_endpoint("http://broker:15672", ["amqp://broker/"]) == (
        "http://broker:15672",
        "guest",
        "guest",
    )


def test_a_management_url_that_is_not_http_is_refused_without_its_password() -> None:
    with pytest.raises(ManagementError, match="not an HTTP URL") as info:
        management_endpoint("amqp://u:secret@h", [])
    assert "secret" not in str(info.value)


def client(handler: httpx.MockTransport) -> HttpManagement:
    return HttpManagement("http://broker:15672", "guest", "guest", transport=handler)


async def test_vhost_names_are_quoted_and_the_answer_returned() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"queues": [], "exchanges": [], "bindings": []})

    async with client(httpx.MockTransport(answer)) as api:
        assert (await api.definitions("/"))["queues"] == []
    assert seen == ["/api/definitions/%2F"]


async def test_an_unreachable_api_says_how_to_enable_the_plugin() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with client(httpx.MockTransport(refuse)) as api:
        with pytest.raises(
            ManagementUnavailable, match="rabbitmq-plugins enable rabbitmq_management"
        ):
            await api.queues("/")


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"error": "not_authorised"}, "refused user 'guest'"),
        (400, {"error": "bad_request", "reason": "vhost_not_found"}, "vhost 'nope' does not exist"),
        (404, {"error": "Object Not Found"}, "vhost 'nope' does not exist"),
        (500, {"error": "boom", "reason": "internal"}, "answered 500: internal"),
    ],
)
async def test_http_errors_become_one_clear_line(status: int, body: object, message: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    async with client(transport) as api:
        with pytest.raises(ManagementError, match=message):
            await api.queues("nope")


def test_the_client_takes_the_settings() -> None:
    settings = Settings(url="amqp://u:pw@h/", management_url="http://h:15672")
    api = management_client(settings)
    assert (api.base_url, api.username) == ("http://h:15672/api", "u")
