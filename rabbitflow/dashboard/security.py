"""Who may see the dashboard and who may act through it (DESIGN.md §11).

- With a token (``RABBITFLOW_DASHBOARD_TOKEN``) every request needs it: ``Authorization:
  Bearer TOKEN``, or a session cookie that ``?token=TOKEN`` sets once (HttpOnly,
  SameSite=Strict; the page is then reloaded without the token in its address). Else 401.
- Actions are POSTs. A browser's POST must carry the session's CSRF token in the
  ``X-Rabbitflow-CSRF`` header (a cross-site page cannot read it, nor send a custom header
  without a CORS preflight this server never grants), and an ``Origin`` that is this
  server's. A request authenticated by its ``Authorization`` header is not a browser's
  ambient credential, so it needs no CSRF token.
- Bound to a loopback address, only loopback ``Host`` names are served: a DNS-rebinding
  page cannot talk to it under a name of its own.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import URL
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp

COOKIE = "rabbitflow_session"
CSRF_HEADER = "x-rabbitflow-csrf"
MAX_SESSIONS = 1000
"""Sessions kept; the oldest is forgotten first (its browser opens ?token= again)."""
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@dataclass
class Access:
    """What a request proved: set on ``request.state.access`` by `Guard`."""

    csrf: str
    """The CSRF token the page of this session embeds."""
    bearer: bool = False
    """Authenticated by an ``Authorization`` header (no CSRF token needed)."""


@dataclass
class Sessions:
    """Browser sessions: id → CSRF token."""

    token: str | None
    anonymous_csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """Without a dashboard token there are no sessions; the page embeds this one."""
    _by_id: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def open(self) -> tuple[str, str]:
        """A new session: (id, CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._by_id[sid] = csrf
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return sid, csrf

    def csrf_of(self, sid: str | None) -> str | None:
        """The CSRF token of a session id, or None when unknown."""
        return self._by_id.get(sid) if sid else None

    def is_token(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is the dashboard token (in constant time)."""
        if self.token is None or not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())


def loopback(host: str) -> bool:
    """Whether ``host`` (a ``--host`` value) is a loopback address."""
    return host in LOOPBACK_NAMES or host.startswith("127.")


class Guard(BaseHTTPMiddleware):
    """Host check, authentication, CSRF and origin checks for POSTs, security headers."""

    def __init__(self, app: ASGIApp, sessions: Sessions, *, loopback_only: bool) -> None:
        super().__init__(app)
        self.sessions = sessions
        self.loopback_only = loopback_only

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await self._check(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _check(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if self.loopback_only and _host_name(request) not in LOOPBACK_NAMES:
            return PlainTextResponse("unexpected Host header", status_code=400)
        access, new_session = self._authenticate(request)
        if access is None:
            return _refused(request)
        if new_session is not None:
            # Reload without the token: it should not stay in the address bar or history.
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = URL(path=request.url.path, query=urlencode(query))
            redirect = RedirectResponse(str(target), status_code=303)
            redirect.set_cookie(COOKIE, new_session, httponly=True, samesite="strict", path="/")
            return redirect
        if request.method not in ("GET", "HEAD"):
            refusal = _cross_site(request, access)
            if refusal is not None:
                return JSONResponse({"error": refusal}, status_code=403)
        request.state.access = access
        return await call_next(request)

    def _authenticate(self, request: Request) -> tuple[Access | None, str | None]:
        sessions = self.sessions
        if sessions.token is None:
            return Access(sessions.anonymous_csrf), None
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and sessions.is_token(credential.strip()):
            return Access(sessions.anonymous_csrf, bearer=True), None
        csrf = sessions.csrf_of(request.cookies.get(COOKIE))
        if csrf is not None:
            return Access(csrf), None
        if request.method == "GET" and sessions.is_token(request.query_params.get("token")):
            sid, csrf = sessions.open()
            return Access(csrf), sid
        return None, None


def _cross_site(request: Request, access: Access) -> str | None:
    """Why a state-changing request is refused, or None."""
    if access.bearer:
        return None
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin.lower() != own.lower():
            return f"cross-site request refused (Origin {origin})"
    elif request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request refused"
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), access.csrf.encode()):
        return f"missing or wrong {CSRF_HEADER} header (reload the page)"
    return None


def _refused(request: Request) -> Response:
    text = (
        "401: this dashboard needs its token (RABBITFLOW_DASHBOARD_TOKEN): open it once as "
        "/?token=TOKEN, or send Authorization: Bearer TOKEN"
    )
    headers = {"www-authenticate": 'Bearer realm="rabbitflow"'}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": text}, status_code=401, headers=headers)
    return PlainTextResponse(text, status_code=401, headers=headers)


def _host_name(request: Request) -> str:
    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname
    return name or ""
