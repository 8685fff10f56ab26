"""`POST /rpc`: JSON-RPC for scripts and load tests, MCP methods plus direct invocation of a
tool by name (`{"method": "<tool>", "params": <arguments>}`).

The hot path is: parse with orjson, look the tool up in the in-memory catalogue, check the
arguments, call the upstream's long-lived backend, wrap the result. No store access.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway import jsonrpc
from gateway.access import principal
from gateway.contracts import Principal
from gateway.jsonrpc import RPCError
from gateway.keys import LIMITS, REGISTRY, RESULTS, SESSIONS, SETTINGS
from gateway.limits import RateLimited
from gateway.mcp import versions
from gateway.mcp.methods import Context, Methods

log = structlog.get_logger(__name__)

METHODS = web.AppKey("methods", Methods)
SERVERS_CLAIM = "servers"
"""A JWT claim listing the virtual server ids its bearer may reach (and nothing else)."""
# `/rpc` has no sessions: these need one, so they are not offered here.
_SESSION_ONLY = frozenset({"resources/subscribe", "resources/unsubscribe", "logging/setLevel"})


def caller_key(request: web.Request, caller: Principal) -> str:
    """Anonymous callers are told apart by address; everyone else by token subject."""
    return f"ip:{request.remote}" if caller.anonymous else f"sub:{caller.subject}"


def respond(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def rate_limited(request_id: jsonrpc.Id, exc: RateLimited) -> web.Response:
    response = respond(jsonrpc.error(request_id, exc), status=429)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


class BodyTooLarge(RPCError):
    status = 413


async def read_body(request: web.Request) -> bytes:
    """The body, or `BodyTooLarge` (-32600) past `MAX_REQUEST_BYTES`."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        raise BodyTooLarge(
            jsonrpc.INVALID_REQUEST,
            f"Invalid Request: body is larger than MAX_REQUEST_BYTES ({limit} bytes)",
        ) from None


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    try:
        message = jsonrpc.parse(await read_body(request))
    except RPCError as exc:
        status = exc.status if isinstance(exc, BodyTooLarge) else 400
        return respond(jsonrpc.error(exc.request_id, exc), status=status)
    if message.is_notification:
        return web.Response(status=202)
    methods = request.app[METHODS]
    caller = principal(request)
    if caller.claims.get(SERVERS_CLAIM) is not None:
        return respond(
            jsonrpc.error(
                message.id,
                RPCError(
                    jsonrpc.INVALID_REQUEST,
                    "Forbidden: this token is limited to virtual servers; use /servers/{id}/mcp",
                ),
            ),
            status=403,
        )
    key = caller_key(request, caller)
    ctx = Context(
        caller=caller,
        caller_key=key,
        view=methods.registry.catalogue.everything,
        version=versions.LATEST_HANDSHAKE,
    )
    try:
        await methods.limits.hit(
            f"caller:{key}", "this caller", methods.settings.rate_limit_per_minute
        )
        if message.method in methods.table and message.method not in _SESSION_ONLY:
            value = await methods.handle(message.method, message.params, ctx)
        elif message.method in ctx.view.tools:
            value = await methods.call(message.method, message.params, ctx)
        else:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {message.method}")
    except RateLimited as exc:
        return rate_limited(message.id, exc)
    except RPCError as exc:
        return respond(jsonrpc.error(message.id, exc))
    except Exception:
        log.exception("rpc method failed", method=message.method)
        return respond(
            jsonrpc.error(message.id, RPCError(jsonrpc.INTERNAL_ERROR, "Internal error"))
        )
    return respond(jsonrpc.result(message.id, value))


def install(app: web.Application) -> None:
    """Add `/rpc`; the methods are bound once the registry and caches exist."""

    async def methods_ctx(app: web.Application) -> AsyncIterator[None]:
        app[METHODS] = Methods(
            app[SETTINGS], app[REGISTRY], app[RESULTS], app[LIMITS], app[SESSIONS]
        )
        yield

    app.cleanup_ctx.append(methods_ctx)
    app.router.add_post("/rpc", handle_rpc)
