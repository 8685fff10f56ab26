"""What every client transport does with HTTP before and after dispatch: check Origin,
resolve the endpoint, read a bounded body, and frame JSON-RPC answers as responses."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway import jsonrpc
from gateway.access import principal
from gateway.jsonrpc import Id, RPCError
from gateway.keys import DISPATCHER, REGISTRY, SETTINGS
from gateway.limits import RateLimited
from gateway.mcp import sse
from gateway.mcp.context import JSON, Context, Endpoint, Refused


class BodyTooLarge(RPCError):
    status = 413


def respond(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def rpc_error(
    status: int, code: int, message: str, request_id: Id = None, data: Any = None
) -> web.Response:
    return respond(jsonrpc.error(request_id, RPCError(code, message, data)), status)


def error_response(request_id: Id, exc: RPCError, status: int) -> web.Response:
    """An error answer; a rate-limit refusal says when to retry."""
    response = respond(jsonrpc.error(request_id, exc), status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def accepts(request: web.Request, kind: str, default: str = "*/*") -> bool:
    accept = request.headers.get("Accept", default)
    return kind in accept or "*/*" in accept


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


def endpoint(request: web.Request) -> Endpoint:
    """The endpoint of an MCP request, or `Refused` (Origin, token limits, unknown server)."""
    if not origin_allowed(request):
        raise Refused(403, "Forbidden: Origin is not allowed")
    return Endpoint.resolve(
        principal(request),
        request.remote,
        request.match_info.get("server"),
        request.app[REGISTRY].catalogue,
    )


def refusal(exc: Refused) -> web.Response:
    return rpc_error(exc.status, jsonrpc.INVALID_REQUEST, exc.message)


async def stream_reply(
    request: web.Request,
    ctx: Context,
    message: jsonrpc.Request,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Answer one request on an SSE stream, after what it relays (progress, log messages)."""
    stream = await sse.EventStream.open(request, headers)

    async def emit(note: JSON) -> None:
        await stream.send(sse.message_event(note))

    ctx.emit = emit
    try:
        reply = await request.app[DISPATCHER].request(message, ctx)
        await stream.send(sse.message_event(reply.message()))
    except (ConnectionError, RuntimeError):
        pass  # the client went away; the dispatcher has cancelled what it ran
    finally:
        await stream.close()
    return stream.response
