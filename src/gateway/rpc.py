"""`POST /rpc`: plain JSON-RPC for scripts and load tests: the MCP methods that need no
session, plus direct invocation of a tool by name (`{"method": "<tool>", "params": <args>}`).

One message per request, no sessions, no streams. The hot path is: parse with orjson,
dispatch (catalogue lookup, argument check, the upstream's long-lived backend), answer.
"""

from __future__ import annotations

from aiohttp import web

from gateway import jsonrpc
from gateway.jsonrpc import RPCError
from gateway.keys import DISPATCHER, SETTINGS
from gateway.limits import RateLimited
from gateway.mcp import versions
from gateway.mcp.context import Context, Era, Refused
from gateway.mcp.framing import endpoint, error_response, read_body, respond


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    try:
        body = await read_body(request)
        message = jsonrpc.parse(body, request.app[SETTINGS].max_json_depth)
    except RPCError as exc:
        return error_response(exc.request_id, exc, exc.status or 400)
    if message.is_notification:
        return web.Response(status=202)
    try:
        where = endpoint(request)
    except Refused as exc:
        return error_response(
            message.id, RPCError(jsonrpc.INVALID_REQUEST, exc.message), exc.status
        )
    dispatcher = request.app[DISPATCHER]
    ctx = Context(
        endpoint=where,
        view=where.view,
        era=Era.PLAIN,
        version=versions.LATEST_HANDSHAKE,
        transport="rpc",
    )
    reply = await dispatcher.request(message, ctx)
    if isinstance(reply.error, RateLimited):
        return error_response(reply.id, reply.error, 429)
    return respond(reply.body())


routes = [web.post("/rpc", handle_rpc)]
