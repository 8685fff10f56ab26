"""The gateway as an OAuth protected resource (RFC 9728, the MCP authorization spec):
its metadata documents, the resource and audiences of each endpoint, and the
`WWW-Authenticate` challenges that point a client without a (good) token to them.

The whole gateway is the resource `OAUTH_AUDIENCE` (by default `PUBLIC_URL`), described
at `/.well-known/oauth-protected-resource`. Each virtual server's endpoint is also a
resource of its own, `<base>/servers/{id}/mcp`, described at the path form
`/.well-known/oauth-protected-resource/servers/{id}/mcp`: a token issued for it is
accepted there (and on that server's other endpoints) but nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import hdrs, web

from gateway.plugin import AuthError

WELL_KNOWN = "/.well-known/oauth-protected-resource"
SERVERS_PREFIX = "/servers/"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', "'") + '"'


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    issuer: str
    audience: str
    public_url: str
    """PUBLIC_URL; without it, the base of URLs is the scheme and Host of the request."""
    required_scopes: tuple[str, ...]
    admin_scope: str

    def base(self, request: web.Request) -> str:
        return self.public_url or f"{request.scheme}://{request.host}"

    @staticmethod
    def server_of(request: web.Request) -> str | None:
        """The virtual server a request's path is under, if any."""
        if not request.path.startswith(SERVERS_PREFIX):
            return None
        server, slash, _ = request.path[len(SERVERS_PREFIX) :].partition("/")
        return server if server and slash else None

    def server_resource(self, request: web.Request, server: str) -> str:
        return f"{self.base(request)}/servers/{server}/mcp"

    def audiences(self, request: web.Request) -> frozenset[str]:
        """The `aud` values a token may carry for this request. A virtual server's own
        resource counts only with PUBLIC_URL: built from the request's Host, it would let a
        token issued for another site's `/servers/...` in."""
        server = self.server_of(request)
        if server is None or not self.public_url:
            return frozenset({self.audience})
        return frozenset({self.audience, self.server_resource(request, server)})

    def metadata_url(self, request: web.Request) -> str:
        server = self.server_of(request)
        suffix = f"/servers/{server}/mcp" if server is not None else ""
        return f"{self.base(request)}{WELL_KNOWN}{suffix}"

    def scopes_supported(self) -> list[str]:
        return list(dict.fromkeys((*self.required_scopes, self.admin_scope, "metrics")))

    def document(self, resource: str) -> dict[str, Any]:
        return {
            "resource": resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": self.scopes_supported(),
            "bearer_methods_supported": ["header"],
            "resource_name": "aio-mcp-gateway",
        }

    def scope_name(self, scope: str) -> str:
        """The authorization server's name for a scope the gateway asked for."""
        return " ".join(self.admin_scope if s == "admin" else s for s in scope.split())

    def challenge(self, request: web.Request, error: AuthError) -> str:
        """`Bearer` with `resource_metadata`, plus `invalid_token` when a token was shown
        and refused, or `insufficient_scope` with the scope a 403 needed."""
        params: list[tuple[str, str]] = []
        if error.status == 403:
            params.append(("error", "insufficient_scope"))
            if error.scope:
                params.append(("scope", self.scope_name(error.scope)))
        elif hdrs.AUTHORIZATION in request.headers:
            params.append(("error", "invalid_token"))
        elif self.required_scopes:
            params.append(("scope", " ".join(self.required_scopes)))
        params.append(("resource_metadata", self.metadata_url(request)))
        params.append(("error_description", error.message))
        return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in params)


RESOURCE = web.AppKey("oauth_protected_resource", ProtectedResource)


def _document(request: web.Request, resource: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(request.app[RESOURCE].document(resource)),
        content_type="application/json",
        # Public metadata that browser-based clients read from other origins.
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=300"},
    )


async def gateway_metadata(request: web.Request) -> web.Response:
    return _document(request, request.app[RESOURCE].audience)


async def server_metadata(request: web.Request) -> web.Response:
    resource = request.app[RESOURCE]
    return _document(request, resource.server_resource(request, request.match_info["server"]))


routes = [
    web.get(WELL_KNOWN, gateway_metadata),
    web.get(WELL_KNOWN + "/servers/{server}/mcp", server_metadata),
]
