"""Protocol 2026-07-28 over Streamable HTTP: stateless, one self-contained POST per request.

No `initialize` and no sessions: every request carries its version and the client's
capabilities in `params._meta`, repeated in the `MCP-Protocol-Version`, `Mcp-Method` and
`Mcp-Name` headers, which must agree with the body (-32020 otherwise). `server/discover`
describes the gateway; `subscriptions/listen` opens a notification stream. Which methods
exist in this era, and the `resultType`/cache fields of results, are the dispatcher's.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import orjson
from aiohttp import web

from gateway import jsonrpc
from gateway.jsonrpc import RPCError
from gateway.keys import DISPATCHER, HUB, STREAM_QUOTA
from gateway.mcp import sse, versions
from gateway.mcp.context import Context, Endpoint, Era
from gateway.mcp.dispatch import MethodSpec, Reply
from gateway.mcp.framing import (
    accepts,
    error_response,
    read_json,
    reply,
    require_json,
    rpc_error,
    status_error,
)
from gateway.mcp.streams import ListenStream

JSON = dict[str, Any]
HEADER_MISMATCH = -32020
MISSING_CAPABILITY = -32021
UNSUPPORTED_VERSION = -32022
HTTP_STATUS = {
    jsonrpc.PARSE_ERROR: 400,
    jsonrpc.INVALID_REQUEST: 400,
    jsonrpc.INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_CAPABILITY: 400,
    UNSUPPORTED_VERSION: 400,
    jsonrpc.METHOD_NOT_FOUND: 404,
    jsonrpc.RATE_LIMITED: 429,
}
_SENTINEL_START, _SENTINEL_END = "=?base64?", "?="


def is_modern_body(body: Any) -> bool:
    """A 2026-07-28 request: its `_meta` carries the protocol version."""
    params = body.get("params") if isinstance(body, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and versions.META_VERSION in meta


def decode_header(value: str) -> str | None:
    """Header values that are not plain ASCII travel as `=?base64?...?=`."""
    if value.startswith(_SENTINEL_START) and value.endswith(_SENTINEL_END):
        try:
            return base64.b64decode(
                value[len(_SENTINEL_START) : -len(_SENTINEL_END)], validate=True
            ).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return value


def _answer(request_id: Any, error: RPCError) -> web.Response:
    return error_response(request_id, error, HTTP_STATUS.get(error.code, 200))


def _check_headers(
    request: web.Request, method: str, spec: MethodSpec | None, params: JSON, meta: JSON
) -> None:
    """Raise `RPCError` (-32020) unless the routing headers agree with the body."""
    for name in ("MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"):
        if len(request.headers.getall(name, [])) > 1:
            raise RPCError(HEADER_MISMATCH, f"{name} header appears more than once")
    if request.headers.get("MCP-Protocol-Version") != meta.get(versions.META_VERSION):
        raise RPCError(
            HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match the request envelope's protocol version",
        )
    if request.headers.get("Mcp-Method") != method:
        raise RPCError(HEADER_MISMATCH, "Mcp-Method header does not match the request's method")
    field = spec.target if spec else None
    if field is not None and params.get(field) is not None:
        header = request.headers.get("Mcp-Name")
        if header is None or decode_header(header) != params.get(field):
            raise RPCError(
                HEADER_MISMATCH, f"Mcp-Name header does not match the request's '{field}'"
            )


def _check_param_headers(request: web.Request, ep: Endpoint, params: JSON) -> None:
    """Arguments a tool marks with `x-mcp-header` must be mirrored in `Mcp-Param-*`."""
    tool = ep.view.tools.get(str(params.get("name")))
    if tool is None:
        return
    arguments = params.get("arguments") or {}
    properties = tool.record.definition.input_schema.get("properties") or {}
    for argument, schema in properties.items():
        header_name = schema.get("x-mcp-header") if isinstance(schema, dict) else None
        if not isinstance(header_name, str):
            continue
        header = request.headers.get(f"Mcp-Param-{header_name}")
        value = arguments.get(argument) if isinstance(arguments, dict) else None
        if value is None and header is None:
            continue
        expected = value if isinstance(value, str) else orjson.dumps(value).decode()
        if header is None or value is None or decode_header(header) != expected:
            raise RPCError(
                HEADER_MISMATCH,
                f"Mcp-Param-{header_name} header does not match argument '{argument}'",
            )


def _envelope(meta: Any) -> JSON:
    """The request's `_meta` envelope, or `RPCError` unless it names a version and the
    client's capabilities."""
    if not isinstance(meta, dict):
        raise RPCError(
            jsonrpc.INVALID_PARAMS,
            "params._meta must be an object carrying "
            f"'{versions.META_VERSION}' and '{versions.META_CAPABILITIES}'",
        )
    missing = [k for k in (versions.META_VERSION, versions.META_CAPABILITIES) if k not in meta]
    if missing:
        raise RPCError(
            jsonrpc.INVALID_PARAMS,
            f"params._meta is missing the required key(s): {', '.join(missing)}",
        )
    return meta


async def post(request: web.Request, ep: Endpoint) -> web.StreamResponse:
    if not accepts(request, "application/json", default=""):
        return rpc_error(
            406, jsonrpc.INVALID_REQUEST, "Not Acceptable: the answer is application/json"
        )
    try:
        require_json(request)
        body = await read_json(request)
    except RPCError as exc:
        return status_error(exc)
    if isinstance(body, dict) and "method" in body and "id" not in body:
        # Notifications mean nothing over stateless HTTP: acknowledged and dropped.
        return web.Response(status=202)
    try:
        message = jsonrpc.parse_value(body)
    except RPCError:
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            "Body must be a single JSON-RPC request or notification object",
        )
    method, params = message.method, message.params
    if method == "subscriptions/listen" and not accepts(request, "text/event-stream", ""):
        return rpc_error(
            406,
            jsonrpc.INVALID_REQUEST,
            "Not Acceptable: subscriptions/listen is text/event-stream",
        )
    dispatcher = request.app[DISPATCHER]
    spec = dispatcher.table.get(method)
    try:
        meta = _envelope(params.get("_meta"))
        version = str(meta[versions.META_VERSION])
        _check_headers(request, method, spec, params, meta)
        if version not in versions.MODERN_VERSIONS:
            raise RPCError(
                UNSUPPORTED_VERSION,
                "Unsupported protocol version",
                {"supported": list(versions.SUPPORTED_VERSIONS), "requested": version},
            )
        if method == "tools/call":
            _check_param_headers(request, ep, params)
    except RPCError as exc:
        return _answer(message.id, exc)
    level = meta.get(versions.META_LOG_LEVEL)
    ctx = Context(
        endpoint=ep,
        view=ep.view,
        era=Era.MODERN,
        version=version,
        transport="streamable-http",
        log_level=level if level in versions.LOG_LEVELS else None,
        meta=meta,
    )
    if accepts(request, "text/event-stream", "") and spec is not None and spec.target:
        eager = "progressToken" in meta or ctx.log_level is not None
        return await reply(request, ctx, message, eager=eager, as_json=_as_json)
    answer = await dispatcher.request(message, ctx)
    if method == "subscriptions/listen" and answer.error is None:
        return await _listen(request, ep, answer)
    return _as_json(answer)


def _as_json(answer: Reply, headers: dict[str, str] | None = None) -> web.Response:
    if answer.error is not None:
        return _answer(answer.id, answer.error)
    return web.Response(body=answer.body(), content_type="application/json")


async def _listen(request: web.Request, ep: Endpoint, reply: Reply) -> web.StreamResponse:
    """Hold a `subscriptions/listen` stream open with what the dispatcher honoured."""
    flags: JSON = reply.result["notifications"]
    quota = request.app[STREAM_QUOTA]
    try:
        quota.take(None, ep.caller_key)
    except RPCError as exc:
        return _answer(reply.id, exc)
    try:
        stream = await sse.EventStream.open(request)
        client = ListenStream(stream, reply.id, ep.server, flags)
        await client.send("notifications/subscriptions/acknowledged", {"notifications": flags})
        hub = request.app[HUB]
        key = f"listen:{uuid.uuid4().hex}"
        hub.attach(key, client)
        try:
            await client.closed.wait()
        finally:
            hub.detach(key, client)
            await stream.close()
    finally:
        quota.give_back(None, ep.caller_key)
    return stream.response
