"""Who may reach which route: the auth middleware and the route access markers.

Routes are `user` by default. `public()` marks a route open to all (health probes);
`admin()` marks one that needs the `admin` scope. With `AUTH_REQUIRED=false` every
request is an anonymous administrator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from gateway.contracts import AuthError, Principal

log = structlog.get_logger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
ANONYMOUS = Principal(subject="anonymous", anonymous=True)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


def public(handler: H) -> H:
    handler.__dict__["gateway_access"] = "public"
    return handler


def admin(handler: H) -> H:
    handler.__dict__["gateway_access"] = "admin"
    return handler


def access_of(request: web.Request) -> str:
    handler = request.match_info.handler
    return str(getattr(handler, "gateway_access", "user"))


def principal(request: web.Request) -> Principal:
    found: Principal = request.get(PRINCIPAL, ANONYMOUS)
    return found


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


def gatekeeper(authenticate: Callable[[web.Request], Awaitable[Principal]] | None) -> Admit:
    """What decides whether a request may reach its route: `admit(request)` sets the
    request's principal and returns None, or returns the refusal (401/403). `authenticate`
    is None when AUTH_REQUIRED=false. The front-door middleware calls it, so a request
    passes one middleware layer, not two."""

    async def admit(request: web.Request) -> web.Response | None:
        access = access_of(request)
        if access == "public" or request.method == "OPTIONS":
            return None
        if authenticate is None:
            request[PRINCIPAL] = ANONYMOUS
            return None
        try:
            who = await authenticate(request)
            if access == "admin" and not who.is_admin:
                raise AuthError("this endpoint needs a token with the 'admin' scope", 403)
        except AuthError as exc:
            log.info("request denied", status=exc.status, reason=exc.message)
            return _denied(exc)
        request[PRINCIPAL] = who
        structlog.contextvars.bind_contextvars(subject=who.subject)
        return None

    return admit
