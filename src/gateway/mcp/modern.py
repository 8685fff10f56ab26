"""Protocol 2026-07-28 over Streamable HTTP: stateless, one self-contained POST per request.

No `initialize` and no sessions: every request carries its version and the client's
capabilities in `params._meta`, repeated in the `MCP-Protocol-Version`, `Mcp-Method` and
`Mcp-Name` headers, which must agree with the body (-32020 otherwise). `server/discover`
describes the gateway; `subscriptions/listen` opens a notification stream. Results carry
`resultType`, and cacheable ones `ttlMs`/`cacheScope`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway import jsonrpc
from gateway.jsonrpc import RPCError
from gateway.limits import RateLimited
from gateway.mcp import sse, versions
from gateway.mcp.common import Endpoint, rpc_error
from gateway.mcp.hub import HUB
from gateway.mcp.methods import SERVER_INFO, Context, upstream_capabilities
from gateway.mcp.streams import ListenStream
from gateway.rpc import BodyTooLarge, read_body

log = structlog.get_logger(__name__)

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
METHODS = frozenset(
    {
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "completion/complete",
    }
)
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
CACHEABLE = frozenset(
    {
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "server/discover",
    }
)
_SENTINEL_START, _SENTINEL_END = "=?base64?", "?="


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


def _accepts(request: web.Request, kind: str) -> bool:
    accept = request.headers.get("Accept", "")
    return kind in accept or "*/*" in accept


def _answer(
    request_id: Any, value: Any = None, error: RPCError | None = None, stream: bool = False
) -> web.Response:
    if error is not None:
        status = HTTP_STATUS.get(error.code, 200)
        return rpc_error(status, error.code, error.message, request_id, error.data)
    return web.Response(body=jsonrpc.result(request_id, value), content_type="application/json")


def decorate(method: str, result: JSON) -> JSON:
    """The 2026 result fields: `resultType`, cache hints and the server's identity."""
    decorated = {**result, "resultType": result.get("resultType", "complete")}
    if method in CACHEABLE:
        decorated.setdefault("ttlMs", 0)
        decorated.setdefault("cacheScope", "private")
    meta = dict(decorated.get("_meta") or {})
    meta[versions.META_SERVER_INFO] = SERVER_INFO
    decorated["_meta"] = meta
    return decorated


def _check_headers(request: web.Request, method: str, params: JSON, meta: JSON) -> None:
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
    field = NAMED.get(method)
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


async def post(request: web.Request, ep: Endpoint) -> web.StreamResponse:
    if not _accepts(request, "application/json"):
        return web.Response(status=406)
    if request.content_type != "application/json":
        return rpc_error(
            415,
            jsonrpc.INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        )
    try:
        body = orjson.loads(await read_body(request))
    except BodyTooLarge as exc:
        return rpc_error(413, exc.code, exc.message)
    except orjson.JSONDecodeError:
        return rpc_error(400, jsonrpc.PARSE_ERROR, "Parse error")
    if isinstance(body, dict) and "method" in body and "id" not in body:
        # Notifications mean nothing over stateless HTTP: acknowledged and dropped.
        return web.Response(status=202)
    try:
        message = jsonrpc.parse(orjson.dumps(body))
    except RPCError:
        return rpc_error(
            400,
            jsonrpc.INVALID_REQUEST,
            "Body must be a single JSON-RPC request or notification object",
        )
    method, params, request_id = message.method, message.params, message.id
    if method == "subscriptions/listen" and not _accepts(request, "text/event-stream"):
        return web.Response(status=406)
    meta = params.get("_meta")
    try:
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
        _check_headers(request, method, params, meta)
        version = meta[versions.META_VERSION]
        if version not in versions.MODERN_VERSIONS:
            raise RPCError(
                UNSUPPORTED_VERSION,
                "Unsupported protocol version",
                {"supported": list(versions.SUPPORTED_VERSIONS), "requested": version},
            )
        if method not in METHODS:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, "Method not found", method)
        if method == "tools/call":
            _check_param_headers(request, ep, params)
    except RPCError as exc:
        return _answer(request_id, error=exc)
    level = meta.get(versions.META_LOG_LEVEL)
    ctx = ep.context(
        str(version), log_level=level if level in versions.LOG_LEVELS else None, meta=meta
    )
    if method == "subscriptions/listen":
        return await listen(request, ep, request_id, params)
    streaming = (
        _accepts(request, "text/event-stream")
        and ("progressToken" in meta or ctx.log_level is not None)
        and method in NAMED
    )
    if streaming:
        return await _stream(request, ep, ctx, method, params, request_id)
    try:
        value = await _run(ep, ctx, method, params)
    except RPCError as exc:
        return _answer(request_id, error=exc)
    except Exception:
        log.exception("mcp method failed", method=method)
        return _answer(request_id, error=RPCError(jsonrpc.INTERNAL_ERROR, "Internal error"))
    return _answer(request_id, decorate(method, value))


async def _run(ep: Endpoint, ctx: Context, method: str, params: JSON) -> JSON:
    methods = ep.methods
    await methods.limits.hit(
        f"caller:{ep.caller_key}", "this caller", methods.settings.rate_limit_per_minute
    )
    try:
        result: JSON = await methods.handle(method, params, ctx)
    except RateLimited:
        raise
    except RPCError as exc:
        if method == "tools/call" and exc.code == jsonrpc.METHOD_NOT_FOUND:
            # 2026 keeps -32601 (HTTP 404) for unknown methods; an unknown tool is a bad param.
            raise RPCError(jsonrpc.INVALID_PARAMS, exc.message, exc.data) from None
        raise
    return result


async def _stream(
    request: web.Request, ep: Endpoint, ctx: Context, method: str, params: JSON, request_id: Any
) -> web.StreamResponse:
    stream = await sse.EventStream.open(request)

    async def emit(note: JSON) -> None:
        await stream.send(sse.message_event(note))

    ctx.emit = emit
    try:
        try:
            value = await _run(ep, ctx, method, params)
            answer: JSON = {"jsonrpc": "2.0", "id": request_id, "result": decorate(method, value)}
        except RPCError as exc:
            answer = {"jsonrpc": "2.0", "id": request_id, "error": exc.to_dict()}
        except Exception:
            log.exception("mcp method failed", method=method)
            answer = {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": jsonrpc.INTERNAL_ERROR, "message": "Internal error"},
            }
        await stream.send(sse.message_event(answer))
    except (ConnectionError, RuntimeError):
        pass
    finally:
        await stream.close()
    return stream.response


async def listen(
    request: web.Request, ep: Endpoint, request_id: Any, params: JSON
) -> web.StreamResponse:
    requested = params.get("notifications")
    flags = ListenStream.honoured(requested if isinstance(requested, dict) else {})
    for uri in flags.get("resourceSubscriptions", ()):
        owner = ep.view.resource_owner(uri)
        backend = ep.methods.registry.full_backends.get(owner) if owner else None
        if backend is not None and (
            (await upstream_capabilities(backend)).get("resources", {}).get("subscribe")
        ):
            try:
                await backend.request(
                    "resources/subscribe", {"uri": uri}, ep.methods.settings.tool_timeout
                )
            except Exception as exc:
                log.warning("upstream subscribe failed", uri=uri, error=str(exc))
    stream = await sse.EventStream.open(request)
    client = ListenStream(stream, request_id, ep.server, flags)
    await client.send("notifications/subscriptions/acknowledged", {"notifications": flags})
    hub = request.app[HUB]
    key = f"listen:{uuid.uuid4().hex}"
    hub.attach(key, client)
    try:
        await client.closed.wait()
    finally:
        hub.detach(key, client)
        await stream.close()
    return stream.response
