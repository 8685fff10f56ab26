"""The calling user's own bearer token, carried from where the request is authenticated to
the backends of upstreams that exchange it for one of their own (RFC 8693,
`gateway.token_exchange`).

A context variable rather than a field on every call: it follows the request into the
tasks it starts (its dispatch, its per-client upstream session opening) and costs the
other upstreams nothing, since only a token-exchange backend reads it. It is never logged,
and never sent anywhere as it is.
"""

from __future__ import annotations

from contextvars import ContextVar

from aiohttp import hdrs, web

_TOKEN: ContextVar[str | None] = ContextVar("caller_token", default=None)


def bearer(request: web.Request) -> str | None:
    """The token of the request's `Authorization: Bearer` header, if it has one."""
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticated(token: str | None) -> None:
    """This request's caller showed `token`, now verified (None: no token, or auth is off)."""
    _TOKEN.set(token)


def current() -> str | None:
    """The verified bearer token of the request being served, if any."""
    return _TOKEN.get()
