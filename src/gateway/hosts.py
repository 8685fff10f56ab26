"""Which `Host` and `Origin` a request may carry, and what body may change state.

The defence against DNS rebinding and cross-site requests, checked once for every route by
the front door (through `access.gatekeeper`):

- `Host` must be one of `ALLOWED_HOSTS`. Unset, a gateway bound to a loopback address
  answers only loopback names (`localhost`, `127.0.0.1`, `[::1]`, any port) and the host
  of `PUBLIC_URL`: a rebound name such as `evil.example` that resolves to 127.0.0.1 is
  refused. Bound to any other address, `Host` is not restricted unless set.
- `Origin`, when sent, must be one of `ALLOWED_ORIGINS` or the origin of `PUBLIC_URL`.
  It is never compared with `Host`, which the attacker's page controls as well.
- A POST, PUT, PATCH or DELETE with a body must declare it `application/json`: a browser
  sends `text/plain` or a form across sites without asking first (no CORS preflight).

A route marked `takes_forms` (the admin UI) skips the last two: HTML forms post
`application/x-www-form-urlencoded` with the page's own Origin, so such a route checks its
own state-changing requests (a session cookie, a CSRF token and a same-origin check).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from gateway.settings import Settings

Screen = Callable[[web.Request], "web.Response | None"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_CHANGES_STATE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
H = TypeVar("H", bound=Callable[..., Any])


def takes_forms(handler: H) -> H:
    """Marks a route that checks Origin and CSRF itself, so HTML forms may post to it."""
    handler.__dict__["gateway_forms"] = True
    return handler


def _refusal(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)


def host_name(host: str) -> str:
    """The name in a `Host` header or an `ALLOWED_HOSTS` entry: no port, no IPv6 brackets,
    lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL or an `Origin` header, in lower case."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def is_loopback(host: str) -> bool:
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names `Host` may name, or None for any."""
    if settings.allowed_hosts:
        names = {host_name(entry) for entry in settings.allowed_hosts}
        return None if "*" in names else frozenset(names)
    if not is_loopback(settings.host):
        return None
    public = {host_name(urlsplit(settings.public_url).netloc)} if settings.public_url else set()
    return LOOPBACK_NAMES | public


def allowed_origins(settings: Settings) -> frozenset[str] | None:
    """The origins `Origin` may name, or None for any (`ALLOWED_ORIGINS=*`)."""
    origins = {origin_of(entry) for entry in settings.allowed_origins if entry != "*"}
    if "*" in settings.allowed_origins:
        return None
    if settings.public_url:
        origins.add(origin_of(settings.public_url))
    return frozenset(origins)


def screen(settings: Settings) -> Screen:
    """The check of one request against these settings: None, or the refusal (421 for a
    Host not served, 403 for a foreign Origin, 415 for a state-changing body that is not
    JSON)."""
    hosts = allowed_hosts(settings)
    origins = allowed_origins(settings)

    def check(request: web.Request) -> web.Response | None:
        if hosts is not None and host_name(request.headers.get("Host", "")) not in hosts:
            return _refusal(421, "Misdirected Request: this Host is not in ALLOWED_HOSTS")
        if getattr(request.match_info.handler, "gateway_forms", False):
            return None
        origin = request.headers.get("Origin")
        if origin is not None and origins is not None and origin_of(origin) not in origins:
            return _refusal(403, "Forbidden: Origin is not allowed")
        if request.method in _CHANGES_STATE and _has_body(request):
            if request.content_type != "application/json":
                return _refusal(
                    415, "Unsupported Media Type: Content-Type must be application/json"
                )
        return None

    return check


def _has_body(request: web.Request) -> bool:
    return request.body_exists or "Content-Type" in request.headers
