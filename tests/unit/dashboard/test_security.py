"""The dashboard's guard on a stand-in app: token, session cookie, CSRF, Origin, Host.

httpx's ASGI transport calls the app in process: no socket is opened.
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rabbitflow.dashboard.security import COOKIE, Guard, Sessions, loopback

TOKEN = "s3cret-token"


def app(token: str | None, loopback_only: bool = True) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"csrf": request.state.access.csrf})

    guard = Middleware(Guard, sessions=Sessions(token), loopback_only=loopback_only)
    return Starlette(
        routes=[Route("/", echo), Route("/act", echo, methods=["POST"])], middleware=[guard]
    )


def client(
    token: str | None = TOKEN, base_url: str = "http://127.0.0.1:8080", **kw: bool
) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app(token, **kw)), base_url=base_url)


async def test_without_credentials_every_request_is_401() -> None:
    c = client()
    assert (await c.get("/")).status_code == 401
    assert (await c.get("/?token=nope")).status_code == 401
    assert (await c.get("/", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await c.get("/", headers={"Authorization": f"Basic {TOKEN}"})).status_code == 401


async def test_the_token_in_the_url_opens_a_session_and_leaves_the_address() -> None:
    c = client()
    first = await c.get(f"/?token={TOKEN}&x=1", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/?x=1"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert (await c.get("/")).status_code == 200


async def test_sessions_have_their_own_csrf_tokens() -> None:
    a, b = client(), client()
    for c in (a, b):
        await c.get(f"/?token={TOKEN}")
    assert (await a.get("/")).json()["csrf"] != (await b.get("/")).json()["csrf"]


async def test_a_post_needs_the_csrf_header_and_no_foreign_origin() -> None:
    c = client()
    await c.get(f"/?token={TOKEN}")
    csrf = (await c.get("/")).json()["csrf"]
    assert (await c.post("/act")).status_code == 403
    assert (await c.post("/act", headers={"X-Rabbitflow-CSRF": "wrong"})).status_code == 403
    foreign = {"X-Rabbitflow-CSRF": csrf, "Origin": "http://evil.example"}
    assert (await c.post("/act", headers=foreign)).status_code == 403
    own = {"X-Rabbitflow-CSRF": csrf, "Origin": "http://127.0.0.1:8080"}
    assert (await c.post("/act", headers=own)).status_code == 200


async def test_a_bearer_request_needs_no_csrf_token() -> None:
    c = client()
    assert (await c.post("/act", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


async def test_loopback_binding_serves_only_loopback_host_names() -> None:
    c = client(None)
    assert (await c.get("/")).status_code == 200
    assert (await c.get("/", headers={"Host": "rebound.example"})).status_code == 400
    anywhere = client(None, base_url="http://box:1", loopback_only=False)
    assert (await anywhere.get("/")).status_code == 200


async def test_every_response_carries_the_security_headers() -> None:
    response = await client().get("/")
    assert response.status_code == 401
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


def test_loopback_addresses() -> None:
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost")
    assert not loopback("0.0.0.0") and not loopback("10.0.0.1")
