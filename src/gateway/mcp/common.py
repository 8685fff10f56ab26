"""What every MCP endpoint checks first: Origin, which view it serves, and whether the
caller's token may reach that view."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway import jsonrpc
from gateway.access import principal
from gateway.catalogue import View
from gateway.contracts import Principal
from gateway.jsonrpc import Id, RPCError
from gateway.keys import SETTINGS
from gateway.mcp.methods import Context, Methods
from gateway.rpc import METHODS, SERVERS_CLAIM, caller_key
from gateway.sessions import SessionRecord


def rpc_error(
    status: int, code: int, message: str, request_id: Id = None, data: Any = None
) -> web.Response:
    body = jsonrpc.error(request_id, RPCError(code, message, data))
    return web.Response(body=body, status=status, content_type="application/json")


def origin_allowed(request: web.Request) -> bool:
    """Browsers send Origin; a page from another site must not drive a local gateway (DNS
    rebinding). Same-origin and `ALLOWED_ORIGINS` pass; requests without Origin are not
    from a browser page and pass too."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = request.app[SETTINGS].allowed_origins
    if "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


def allowed_servers(caller: Principal) -> list[str] | None:
    claim = caller.claims.get(SERVERS_CLAIM) if caller.claims else None
    if claim is None:
        return None
    if isinstance(claim, str):
        return claim.split()
    return [str(s) for s in claim] if isinstance(claim, list) else []


class Endpoint:
    """The view and caller of one request to an MCP endpoint."""

    def __init__(
        self,
        request: web.Request,
        methods: Methods,
        view: View,
        server: str | None,
        caller: Principal,
    ) -> None:
        self.request = request
        self.methods = methods
        self.view = view
        self.server = server
        self.caller = caller
        self.caller_key = caller_key(request, caller)

    def context(self, version: str, **extra: Any) -> Context:
        return Context(
            caller=self.caller, caller_key=self.caller_key, view=self.view, version=version, **extra
        )


def endpoint(request: web.Request) -> Endpoint | web.Response:
    """Resolve the endpoint, or the error response that refuses it."""
    if not origin_allowed(request):
        return rpc_error(403, jsonrpc.INVALID_REQUEST, "Forbidden: Origin is not allowed")
    methods = request.app[METHODS]
    caller = principal(request)
    server = request.match_info.get("server")
    allowed = allowed_servers(caller)
    if allowed is not None and (server is None or server not in allowed):
        where = f"virtual server '{server}'" if server else "the whole gateway"
        return rpc_error(
            403, jsonrpc.INVALID_REQUEST, f"Forbidden: this token may not reach {where}"
        )
    catalogue = methods.registry.catalogue
    if server is None:
        view = catalogue.everything
    else:
        found = catalogue.servers.get(server)
        if found is None:
            return rpc_error(
                404, jsonrpc.INVALID_REQUEST, f"Not Found: no virtual server '{server}'"
            )
        view = found
    return Endpoint(request, methods, view, server, caller)


def owned(session: SessionRecord, ep: Endpoint, transport: str) -> bool:
    """A session answers only to its own caller, endpoint and transport."""
    return (
        session.subject == ep.caller.subject
        and session.server == ep.server
        and session.transport == transport
    )
