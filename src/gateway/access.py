"""Who may reach which route: the auth middleware and the route access markers.

Routes are `user` by default. `public()` marks a route open to all (health probes, and
every `/.well-known/` path, whose metadata must be readable before a client has a token);
`identified()` one open to all that tells who called when a valid token came; `admin()` one
that needs the `admin` scope, and `scoped(name)` one that needs that scope or `admin`. With
`AUTH_REQUIRED=false` every request is an anonymous administrator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from gateway import caller_token
from gateway.contracts import AuthError, Principal
from gateway.hosts import Screen

log = structlog.get_logger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
Administers = Callable[[web.Request, Principal], bool]
ADMINISTERS: web.AppKey[Administers] = web.AppKey("administers")
"""Whether a caller without the `admin` scope may use an admin route (its roles grant the
route's area, `admin_area`); unset, only the `admin` scope opens admin routes."""
ANONYMOUS = Principal(subject="anonymous", anonymous=True)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


def public(handler: H) -> H:
    handler.__dict__["gateway_access"] = "public"
    return handler


def identified(handler: H) -> H:
    handler.__dict__["gateway_access"] = "identified"
    return handler


def admin(handler: H) -> H:
    handler.__dict__["gateway_access"] = "admin"
    return handler


def scoped(scope: str) -> Callable[[H], H]:
    """Marks a route that needs `scope` or `admin` (e.g. `metrics`)."""

    def mark(handler: H) -> H:
        handler.__dict__["gateway_access"] = scope
        return handler

    return mark


def access_of(request: web.Request) -> str:
    if request.path.startswith("/.well-known/"):
        return "public"
    handler = request.match_info.handler
    return str(getattr(handler, "gateway_access", "user"))


def admin_area(request: web.Request) -> tuple[str, str]:
    """The admin area of a request (its path's first segment: `upstreams`, `servers`,
    `roles`...) and its action: `read` for GET and HEAD, `write` otherwise."""
    area = request.path.strip("/").split("/", 1)[0]
    return area, "read" if request.method in {"GET", "HEAD"} else "write"


def principal(request: web.Request) -> Principal:
    found: Principal = request.get(PRINCIPAL, ANONYMOUS)
    return found


def is_identified(request: web.Request) -> bool:
    """Whether an `identified()` route's caller showed a valid token (or auth is off)."""
    return PRINCIPAL in request


Challenge = Callable[[web.Request, AuthError], "str | None"]
"""The `WWW-Authenticate` value of a refusal, or None for the default (`bearer_challenge`)."""


def bearer_challenge(error: AuthError) -> str | None:
    """RFC 6750's challenge, with the reason for clients that show it: `invalid_token` for
    a 401, `insufficient_scope` naming the scope for a 403 that lacked one."""
    reason = error.message.replace('"', "'")
    if error.status == 401:
        return f'Bearer error="invalid_token", error_description="{reason}"'
    if error.status == 403 and error.scope:
        scope = f'scope="{error.scope}"'
        return f'Bearer error="insufficient_scope", {scope}, error_description="{reason}"'
    return None


def _denied(request: web.Request, error: AuthError, challenge: Challenge) -> web.Response:
    headers = {}
    value = challenge(request, error) or bearer_challenge(error)
    if value is not None:
        headers["WWW-Authenticate"] = value
    return web.json_response(
        {"error": {"status": error.status, "message": error.message}},
        status=error.status,
        headers=headers,
    )


Admit = Callable[[web.Request], Awaitable["web.Response | None"]]


def _check_scope(access: str, who: Principal) -> None:
    if access in {"user", "identified"} or who.is_admin:
        return
    if access == "admin":
        raise AuthError("this endpoint needs a token with the 'admin' scope", 403, "admin")
    if access not in who.scopes:
        raise AuthError(
            f"this endpoint needs a token with the '{access}' or 'admin' scope", 403, access
        )


def _no_challenge(request: web.Request, error: AuthError) -> str | None:
    return None


def gatekeeper(
    authenticate: Callable[[web.Request], Awaitable[Principal]] | None,
    screen: Screen,
    challenge: Challenge = _no_challenge,
) -> Admit:
    """What decides whether a request may reach its route: `admit(request)` sets the
    request's principal and returns None, or returns the refusal (`screen`'s Host, Origin
    and body checks first, then 401/403, whose `WWW-Authenticate` `challenge` may write).
    `authenticate` is None when AUTH_REQUIRED=false. The front-door middleware calls it,
    so a request passes one middleware layer, not two."""

    async def admit(request: web.Request) -> web.Response | None:
        # A connection's requests may share one task: none inherits another's token.
        caller_token.authenticated(None)
        refused = screen(request)
        if refused is not None:
            log.info("request refused", status=refused.status, reason=refused.reason)
            return refused
        access = access_of(request)
        if access == "public" or request.method == "OPTIONS":
            return None
        if authenticate is None:
            request[PRINCIPAL] = ANONYMOUS
            return None
        try:
            who = await authenticate(request)
            administers = request.app.get(ADMINISTERS) if access == "admin" else None
            if administers is None or not administers(request, who):
                _check_scope(access, who)
        except AuthError as exc:
            if access == "identified":
                return None
            log.info("request denied", status=exc.status, reason=exc.message)
            return _denied(request, exc, challenge)
        request[PRINCIPAL] = who
        caller_token.authenticated(caller_token.bearer(request))
        structlog.contextvars.bind_contextvars(subject=who.subject)
        return None

    return admit
