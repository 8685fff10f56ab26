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

from gateway.contracts import AuthError, Principal
from gateway.hosts import Screen

log = structlog.get_logger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
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


def principal(request: web.Request) -> Principal:
    found: Principal = request.get(PRINCIPAL, ANONYMOUS)
    return found


def is_identified(request: web.Request) -> bool:
    """Whether an `identified()` route's caller showed a valid token (or auth is off)."""
    return PRINCIPAL in request


def _denied(error: AuthError) -> web.Response:
    headers = {}
    if error.status == 401:
        # RFC 6750: the challenge, with the reason for clients that show it.
        reason = error.message.replace('"', "'")
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{reason}"'
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
        raise AuthError("this endpoint needs a token with the 'admin' scope", 403)
    if access not in who.scopes:
        raise AuthError(f"this endpoint needs a token with the '{access}' or 'admin' scope", 403)


def gatekeeper(
    authenticate: Callable[[web.Request], Awaitable[Principal]] | None, screen: Screen
) -> Admit:
    """What decides whether a request may reach its route: `admit(request)` sets the
    request's principal and returns None, or returns the refusal (`screen`'s Host, Origin
    and body checks first, then 401/403). `authenticate` is None when AUTH_REQUIRED=false.
    The front-door middleware calls it, so a request passes one middleware layer, not two."""

    async def admit(request: web.Request) -> web.Response | None:
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
            _check_scope(access, who)
        except AuthError as exc:
            if access == "identified":
                return None
            log.info("request denied", status=exc.status, reason=exc.message)
            return _denied(exc)
        request[PRINCIPAL] = who
        structlog.contextvars.bind_contextvars(subject=who.subject)
        return None

    return admit
