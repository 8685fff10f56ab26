"""How an admin UI page is served: its session, its form checks, and its HTML.

`page` handlers answer GET for a signed-in administrator (anyone else goes to the sign-in
page); `form` handlers answer POST only with a valid session, a same-origin request and the
page's CSRF token, and refuse anything else with a 403 page. Both are `public` to the
gateway's bearer-token gatekeeper and marked `takes_forms`: the UI does its own checks.
Failures the admin API knows (`admin._EXPECTED`) become a message in the page.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jinja2
import orjson
import structlog
from aiohttp import web

from gateway.access import public
from gateway.admin import _EXPECTED, Invalid, store_failure
from gateway.cacheuse import CacheUnavailable
from gateway.hosts import origin_of, takes_forms
from gateway.keys import ADMIN_UI, AUTHENTICATOR, MANAGED_TOKENS
from gateway.settings import Settings
from gateway.ui.session import COOKIE_PATH, CSRF_FIELD, UiSession
from gateway.ui.state import AdminUi

log = structlog.get_logger(__name__)

FLASH_COOKIE = "gateway_admin_flash"
FLASH_CHARS_MAX = 1000
SIGN_IN = "/admin/signin"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.ui", "templates"),
        autoescape=True,
    )
    env.filters["pretty"] = lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    env.filters["timestamp"] = lambda seconds: time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(seconds)
    )
    return env


def trusted_origins(settings: Settings) -> frozenset[str]:
    origins = {origin_of(o) for o in settings.allowed_origins if o != "*"}
    if settings.public_url:
        origins.add(origin_of(settings.public_url))
    return frozenset(origins)


@dataclass(slots=True)
class Visit:
    """One request to the UI: who made it and what its page shows."""

    request: web.Request
    ui: AdminUi
    cookie: str
    session: UiSession | None
    new_cookie: bool = False

    @property
    def csrf(self) -> str:
        return self.ui.sessions.csrf_token(self.cookie)

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        flashes = [*_flashes(self.request), *values.pop("messages", [])]
        html = self.ui.templates.get_template(template).render(
            csrf=self.csrf,
            csrf_field=CSRF_FIELD,
            session=self.session,
            auth_required=self.ui.auth_required,
            has_tokens=MANAGED_TOKENS in self.request.app,
            path=self.request.path,
            messages=flashes,
            errors=values.pop("errors", []),
            **values,
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        self.finish(response)
        if flashes:
            response.del_cookie(FLASH_COOKIE, path=COOKIE_PATH)
        return response

    def finish(self, response: web.StreamResponse) -> None:
        response.headers["Cache-Control"] = "no-store"
        if self.new_cookie:
            self.ui.sessions.set_cookie(response, self.cookie)

    def redirect(self, location: str, message: str | None = None) -> web.Response:
        response = web.Response(status=303, headers={"Location": location})
        self.finish(response)
        if message:
            text = base64.urlsafe_b64encode(message[:FLASH_CHARS_MAX].encode()).decode()
            response.set_cookie(
                FLASH_COOKIE,
                text,
                path=COOKIE_PATH,
                httponly=True,
                samesite="Strict",
                secure=self.ui.sessions.secure,
            )
        return response


def _flashes(request: web.Request) -> list[str]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or len(raw) > 2 * FLASH_CHARS_MAX:
        return []
    try:
        return [base64.urlsafe_b64decode(raw.encode()).decode()]
    except (ValueError, UnicodeDecodeError):
        return []


async def visit(request: web.Request) -> Visit:
    """Who makes this request. With AUTH_REQUIRED=false everyone is the anonymous
    administrator, as on the admin API; the cookie still keys the CSRF token."""
    ui = request.app[ADMIN_UI]
    sessions = ui.sessions
    cookie = sessions.cookie_of(request)
    new = cookie is None
    if cookie is None:
        cookie = sessions.new_cookie()
    if not ui.auth_required:
        session: UiSession | None = UiSession("anonymous", (), {}, True, float("inf"))
    else:
        session = None if new else await sessions.load(cookie)
        if session is not None and _revoked(request, session):
            session = None
    return Visit(request, ui, cookie, session, new)


def _revoked(request: web.Request, session: UiSession) -> bool:
    """Whether the token of this sign-in has been revoked since (for authenticators that
    keep revoked `jti`s, as `jwt` and `oauth` do): it ends at the next page."""
    jti = session.claims.get("jti")
    revoked: Container[object] = getattr(request.app.get(AUTHENTICATOR), "revoked", ())
    return jti is not None and jti in revoked


Handler = Callable[[Visit], Awaitable[web.StreamResponse]]
FormHandler = Callable[[Visit, dict[str, str]], Awaitable[web.StreamResponse]]


SESSIONS_DOWN = "The session store (the cache) does not answer."


def problem_page(
    request: web.Request, ui: AdminUi, title: str, reason: str, status: int
) -> web.Response:
    html = ui.templates.get_template("problem.html").render(
        title=title, message=reason, session=None, path=request.path
    )
    return web.Response(text=html, status=status, content_type="text/html")


def unavailable_page(request: web.Request, ui: AdminUi, reason: str) -> web.Response:
    return problem_page(request, ui, "Unavailable", reason, 503)


def page(
    handler: Handler, signed_in: bool = True
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A GET page for a signed-in administrator (for anyone with `signed_in=False`)."""

    @functools.wraps(handler)
    async def route(request: web.Request) -> web.StreamResponse:
        try:
            current = await visit(request)
        except CacheUnavailable:
            return unavailable_page(request, request.app[ADMIN_UI], SESSIONS_DOWN)
        if signed_in and current.session is None:
            return current.redirect(SIGN_IN)
        return await handler(current)

    return takes_forms(public(route))


def open_page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A GET page for anyone (the sign-in page)."""
    return page(handler, signed_in=False)


def refused(request: web.Request, ui: AdminUi, reason: str) -> web.Response:
    log.info("admin ui form refused", reason=reason)
    return problem_page(request, ui, "Form refused", reason, 403)


def same_origin(request: web.Request, ui: AdminUi) -> str | None:
    """Why this POST does not come from the UI's own pages, or None when it does."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"the form came from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return "the request names no Origin"
    own = origin_of(f"{request.scheme}://{request.host}")
    found = origin_of(origin)
    if found != own and found not in ui.trusted_origins:
        return f"the form came from another origin ({urlsplit(origin).netloc or origin})"
    return None


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_type not in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        raise web.HTTPUnsupportedMediaType(text="the admin UI takes HTML form posts only")
    data = await request.post()
    return {key: value for key, value in data.items() if isinstance(value, str)}


def form(
    handler: FormHandler, signed_in: bool = True
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A POST form: same origin, CSRF token, and (unless `signed_in=False`) a session."""

    @functools.wraps(handler)
    async def route(request: web.Request) -> web.StreamResponse:
        ui = request.app[ADMIN_UI]
        reason = same_origin(request, ui)
        if reason is not None:
            return refused(request, ui, reason)
        try:
            fields = await read_form(request)
        except web.HTTPException as exc:
            return refused(request, ui, exc.text or exc.reason)
        cookie = ui.sessions.cookie_of(request)
        if not ui.sessions.csrf_valid(cookie, fields.get(CSRF_FIELD)):
            return refused(
                request, ui, "the form's CSRF token is missing or wrong; reload the page"
            )
        try:
            current = await visit(request)
        except CacheUnavailable:
            return unavailable_page(request, ui, SESSIONS_DOWN)
        if signed_in and current.session is None:
            return current.redirect(SIGN_IN, "Your sign-in has ended; sign in again.")
        return await handler(current, fields)

    return takes_forms(public(route))


def failure(exc: Exception) -> str:
    """The admin API's own message for an expected failure."""
    if isinstance(exc, CacheUnavailable):
        return f"the cache does not answer: {exc}"
    answer = store_failure(exc)
    assert isinstance(answer.body, bytes)
    message: str = orjson.loads(answer.body)["error"]["message"]
    return message


EXPECTED: tuple[type[Exception], ...] = (*_EXPECTED, CacheUnavailable)


def json_field(fields: dict[str, str], name: str, default: Any) -> Any:
    """A form field holding JSON, or `default` when empty; `Invalid` when not JSON."""
    raw = fields.get(name, "").strip()
    if not raw:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"'{name}' is not valid JSON: {exc}") from None


def number_field(fields: dict[str, str], name: str, kind: type[int] | type[float]) -> Any:
    """A form field holding a number of `kind`, or None when empty; `Invalid` when not one."""
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise Invalid(f"'{name}' must be a number, or empty") from None
