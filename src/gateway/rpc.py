"""JSON-RPC dispatch for `POST /rpc`: MCP methods plus direct invocation of a tool by name.

The hot path is: parse with orjson, look the tool up in the in-memory catalogue, check the
arguments, call the upstream's long-lived backend, wrap the result. No store access.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway import __version__, jsonrpc
from gateway.access import principal
from gateway.contracts import BackendError, Principal
from gateway.jsonrpc import RPCError
from gateway.keys import LIMITS, REGISTRY, RESULTS, SETTINGS
from gateway.limits import RateLimited, RateLimiter
from gateway.metrics import TOOL_CALLS
from gateway.registry import Registry, Tool
from gateway.results import ResultCache, result_key
from gateway.settings import Settings

log = structlog.get_logger(__name__)

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
PAGE_SIZE = 100


def error_result(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


class Dispatcher:
    """Answers one parsed JSON-RPC request against a worker's registry."""

    def __init__(
        self, settings: Settings, registry: Registry, results: ResultCache, limits: RateLimiter
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.results = results
        self.limits = limits
        self.methods: dict[str, Callable[[dict[str, Any], Principal], Awaitable[Any]]] = {
            "initialize": self.initialize,
            "ping": self.ping,
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
        }

    async def dispatch(self, request: jsonrpc.Request, caller: Principal) -> Any:
        method = self.methods.get(request.method)
        if method is not None:
            return await method(request.params, caller)
        if request.method in self.registry.catalogue.tools:
            return await self.call(request.method, request.params, caller)
        raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {request.method}")

    async def initialize(self, params: dict[str, Any], caller: Principal) -> dict[str, Any]:
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "aio-mcp-gateway", "version": __version__},
        }

    async def ping(self, params: dict[str, Any], caller: Principal) -> dict[str, Any]:
        return {}

    async def tools_list(self, params: dict[str, Any], caller: Principal) -> dict[str, Any]:
        listed = self.registry.catalogue.listed
        start = _decode_cursor(params.get("cursor"))
        page: dict[str, Any] = {"tools": listed[start : start + PAGE_SIZE]}
        if start + PAGE_SIZE < len(listed):
            page["nextCursor"] = _encode_cursor(start + PAGE_SIZE)
        return page

    async def tools_call(self, params: dict[str, Any], caller: Principal) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RPCError(jsonrpc.INVALID_PARAMS, "Invalid params: 'name' must be a string")
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RPCError(jsonrpc.INVALID_PARAMS, "Invalid params: 'arguments' must be an object")
        return await self.call(name, arguments, caller)

    async def call(self, name: str, arguments: dict[str, Any], caller: Principal) -> dict[str, Any]:
        catalogue = self.registry.catalogue
        tool = catalogue.tools.get(name)
        if tool is None:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Unknown tool: {name}")
        if not tool.record.enabled:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Tool is disabled: {name}")
        problem = tool.check(arguments)
        if problem is not None:
            raise RPCError(jsonrpc.INVALID_PARAMS, f"Invalid arguments for {name}: {problem}")
        record = tool.record
        await self.limits.hit(
            f"tool:{name}",
            f"tool '{name}'",
            record.rate_limit or self.settings.tool_rate_limit_per_minute,
        )
        if record.cache_ttl:
            key = result_key(name, arguments, caller.subject)
            cached = await self.results.get(key)
            if cached is not None:
                return cached
            return await self.results.put(
                key, await self._upstream(tool, arguments), record.cache_ttl
            )
        return await self._upstream(tool, arguments)

    async def _upstream(self, tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
        upstream = tool.record.upstream
        backend = self.registry.backends.get(upstream)
        if backend is None:
            return error_result(f"upstream '{upstream}' has no backend in this gateway")
        timeout = self.settings.tool_timeout
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(timeout):
                return await backend.call_tool(tool.record.original_name, arguments, timeout)
        except BackendError as exc:
            outcome = "error"
            log.warning(
                "upstream call failed", tool=tool.record.name, upstream=upstream, error=str(exc)
            )
            return error_result(str(exc))
        except TimeoutError:
            outcome = "timeout"
            log.warning("upstream call timed out", tool=tool.record.name, upstream=upstream)
            return error_result(f"upstream '{upstream}' did not answer within {timeout:g}s")
        finally:
            TOOL_CALLS.labels(upstream, outcome).observe(time.perf_counter() - started)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset})).decode()


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(str(cursor)))["o"]
    except Exception:
        raise RPCError(jsonrpc.INVALID_PARAMS, "Invalid params: unknown cursor") from None
    if not isinstance(offset, int) or offset < 0:
        raise RPCError(jsonrpc.INVALID_PARAMS, "Invalid params: unknown cursor")
    return offset


DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def caller_key(request: web.Request, caller: Principal) -> str:
    """Anonymous callers are told apart by address; everyone else by token subject."""
    return f"ip:{request.remote}" if caller.anonymous else f"sub:{caller.subject}"


def _respond(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        return _respond(
            jsonrpc.error(
                None,
                RPCError(
                    jsonrpc.INVALID_REQUEST,
                    f"Invalid Request: body is larger than MAX_REQUEST_BYTES ({limit} bytes)",
                ),
            ),
            status=413,
        )
    try:
        message = jsonrpc.parse(body)
    except RPCError as exc:
        return _respond(jsonrpc.error(exc.request_id, exc), status=400)
    if message.is_notification:
        return web.Response(status=202)
    dispatcher = request.app[DISPATCHER]
    caller = principal(request)
    try:
        await dispatcher.limits.hit(
            f"caller:{caller_key(request, caller)}",
            "this caller",
            dispatcher.settings.rate_limit_per_minute,
        )
        value = await dispatcher.dispatch(message, caller)
    except RateLimited as exc:
        response = _respond(jsonrpc.error(message.id, exc), status=429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except RPCError as exc:
        return _respond(jsonrpc.error(message.id, exc))
    except Exception:
        log.exception("rpc method failed", method=message.method)
        return _respond(
            jsonrpc.error(message.id, RPCError(jsonrpc.INTERNAL_ERROR, "Internal error"))
        )
    return _respond(jsonrpc.result(message.id, value))


def install(app: web.Application) -> None:
    """Add `/rpc`; the dispatcher is built once the registry exists."""

    async def dispatcher_ctx(app: web.Application) -> Any:
        app[DISPATCHER] = Dispatcher(app[SETTINGS], app[REGISTRY], app[RESULTS], app[LIMITS])
        yield

    app.cleanup_ctx.append(dispatcher_ctx)
    app.router.add_post("/rpc", handle_rpc)
