"""The MCP methods the gateway serves, for every transport and version.

A transport parses a message, builds a `Context` (who calls, which view of the catalogue,
which protocol version, how to reach the client while the request runs) and calls
`Methods.handle`. Errors are raised as `RPCError`; tool failures are `isError` results.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from gateway import __version__, jsonrpc
from gateway.catalogue import Tool, View
from gateway.contracts import BackendError, FullBackend, Principal, UpstreamError
from gateway.jsonrpc import RPCError
from gateway.limits import RateLimiter
from gateway.mcp import versions
from gateway.metrics import TOOL_CALLS
from gateway.registry import Registry
from gateway.results import ResultCache, result_key
from gateway.sessions import SessionRecord, SessionStore
from gateway.settings import Settings

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
Emit = Callable[[JSON], Awaitable[None]]
PAGE_SIZE = 100
RESOURCE_NOT_FOUND = -32002
SERVER_INFO = {"name": "aio-mcp-gateway", "version": __version__}
CAPABILITIES: JSON = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}

_tokens = itertools.count(1)
_TOKEN_PREFIX = f"gw-{os.getpid()}-"


@dataclass(slots=True)
class Context:
    caller: Principal
    caller_key: str
    view: View
    version: str
    session: SessionRecord | None = None
    emit: Emit | None = None
    """Sends a notification to the client on this request's stream; None in JSON mode."""
    log_level: str | None = None
    meta: JSON = field(default_factory=dict)


def error_result(message: str) -> JSON:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def invalid(message: str) -> RPCError:
    return RPCError(jsonrpc.INVALID_PARAMS, f"Invalid params: {message}")


def encode_cursor(offset: int, version: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([offset, version])).decode()


def decode_cursor(cursor: Any) -> int:
    """Cursors are offsets into a sorted listing; any worker can continue any cursor."""
    if cursor is None:
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(str(cursor)))[0]
    except Exception:
        raise invalid("unknown cursor") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise invalid("unknown cursor")
    return offset


def page(items: list[JSON], key: str, params: JSON, version: int) -> JSON:
    start = decode_cursor(params.get("cursor"))
    result: JSON = {key: items[start : start + PAGE_SIZE]}
    if start + PAGE_SIZE < len(items):
        result["nextCursor"] = encode_cursor(start + PAGE_SIZE, version)
    return result


async def upstream_capabilities(backend: FullBackend) -> JSON:
    try:
        await backend.connect()
    except BackendError:
        return {}
    return backend.capabilities


class Methods:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        results: ResultCache,
        limits: RateLimiter,
        sessions: SessionStore,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.results = results
        self.limits = limits
        self.sessions = sessions
        self.table: dict[str, Callable[[JSON, Context], Awaitable[Any]]] = {
            "initialize": self.initialize,
            "ping": self.ping,
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "resources/list": self.resources_list,
            "resources/templates/list": self.templates_list,
            "resources/read": self.resources_read,
            "resources/subscribe": self.resources_subscribe,
            "resources/unsubscribe": self.resources_unsubscribe,
            "prompts/list": self.prompts_list,
            "prompts/get": self.prompts_get,
            "completion/complete": self.complete,
            "logging/setLevel": self.set_level,
            "server/discover": self.discover,
        }

    async def handle(self, method: str, params: JSON, ctx: Context) -> Any:
        handler = self.table.get(method)
        if handler is None:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
        return await handler(params, ctx)

    # --- lifecycle -----------------------------------------------------------------------

    def capabilities(self) -> JSON:
        return CAPABILITIES

    def instructions(self, view: View) -> str | None:
        if view.server is None:
            return None
        return view.server.description or None

    async def initialize(self, params: JSON, ctx: Context) -> JSON:
        result: JSON = {
            "protocolVersion": versions.negotiate(params.get("protocolVersion")),
            "capabilities": self.capabilities(),
            "serverInfo": SERVER_INFO,
        }
        instructions = self.instructions(ctx.view)
        if instructions:
            result["instructions"] = instructions
        return result

    async def discover(self, params: JSON, ctx: Context) -> JSON:
        result: JSON = {
            "supportedVersions": list(versions.SUPPORTED_VERSIONS),
            "capabilities": self.capabilities(),
        }
        instructions = self.instructions(ctx.view)
        if instructions:
            result["instructions"] = instructions
        return result

    async def ping(self, params: JSON, ctx: Context) -> JSON:
        return {}

    # --- tools -----------------------------------------------------------------------------

    async def _refresh_view(self, ctx: Context) -> None:
        """Lists are answered from the newest catalogue any worker has published."""
        await self.registry.ensure_current()
        server = ctx.view.server.id if ctx.view.server else None
        ctx.view = self.registry.catalogue.view(server) or ctx.view

    async def tools_list(self, params: JSON, ctx: Context) -> JSON:
        await self._refresh_view(ctx)
        return page(ctx.view.tool_list, "tools", params, self.registry.catalogue.version)

    async def tools_call(self, params: JSON, ctx: Context) -> JSON:
        name = params.get("name")
        if not isinstance(name, str):
            raise invalid("'name' must be a string")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise invalid("'arguments' must be an object")
        meta = params.get("_meta")
        return await self.call(name, arguments, ctx, meta if isinstance(meta, dict) else None)

    def find_tool(self, name: str, view: View) -> Tool:
        tool = view.tools.get(name)
        if tool is None:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Unknown tool: {name}")
        if not tool.record.enabled:
            raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Tool is disabled: {name}")
        return tool

    async def call(
        self, name: str, arguments: JSON, ctx: Context, meta: JSON | None = None
    ) -> JSON:
        tool = self.find_tool(name, ctx.view)
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
            key = result_key(name, arguments, ctx.caller.subject)
            cached = await self.results.get(key)
            if cached is not None:
                return cached
            result = await self._call_upstream(tool, arguments, ctx, meta)
            return await self.results.put(key, result, record.cache_ttl)
        return await self._call_upstream(tool, arguments, ctx, meta)

    async def _call_upstream(
        self, tool: Tool, arguments: JSON, ctx: Context, meta: JSON | None
    ) -> JSON:
        upstream = tool.record.upstream
        backend = self.registry.backends.get(upstream)
        if backend is None:
            return error_result(f"upstream '{upstream}' has no backend in this gateway")
        timeout = self.settings.tool_timeout
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(timeout):
                full = self.registry.full_backends.get(upstream)
                if ctx.emit is None or full is None:
                    # Nothing to relay: the plain call (backends cancel upstream themselves
                    # when the caller goes away).
                    return await backend.call_tool(tool.record.definition.name, arguments, timeout)
                params: JSON = {"name": tool.record.definition.name, "arguments": arguments}
                return await self.forward(full, "tools/call", params, ctx, meta, timeout)
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

    async def forward(
        self,
        backend: FullBackend,
        method: str,
        params: JSON,
        ctx: Context,
        meta: JSON | None,
        timeout: float | None = None,
    ) -> JSON:
        """Send a request upstream, relaying its progress (under the client's own token) and
        log messages (at the client's level) to the client's stream."""
        client_token = (meta or {}).get("progressToken")
        relay = None
        if ctx.emit is not None:
            emit = ctx.emit
            if client_token is not None:
                params = {**params, "_meta": {"progressToken": f"{_TOKEN_PREFIX}{next(_tokens)}"}}

            async def relay(note_method: str, note: JSON) -> None:
                if note_method == "notifications/progress":
                    if client_token is None:
                        return
                    note = {**note, "progressToken": client_token}
                elif note_method == "notifications/message":
                    if versions.is_modern(ctx.version) and ctx.log_level is None:
                        return  # 2026: no log messages without a per-request opt-in
                    if not versions.log_level_allows(ctx.log_level, str(note.get("level"))):
                        return
                else:
                    return
                await emit({"jsonrpc": "2.0", "method": note_method, "params": note})

        return await backend.request(method, params, timeout or self.settings.tool_timeout, relay)

    # --- resources ---------------------------------------------------------------------------

    async def resources_list(self, params: JSON, ctx: Context) -> JSON:
        await self._refresh_view(ctx)
        return page(ctx.view.resource_list, "resources", params, self.registry.catalogue.version)

    async def templates_list(self, params: JSON, ctx: Context) -> JSON:
        await self._refresh_view(ctx)
        return page(
            ctx.view.template_list, "resourceTemplates", params, self.registry.catalogue.version
        )

    def _full_backend(self, upstream: str) -> FullBackend:
        backend = self.registry.full_backends.get(upstream)
        if backend is None:
            raise RPCError(
                jsonrpc.INTERNAL_ERROR, f"upstream '{upstream}' cannot serve this request"
            )
        return backend

    def _resource_backend(self, params: JSON, ctx: Context) -> tuple[str, FullBackend]:
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise invalid("'uri' must be a non-empty string")
        owner = ctx.view.resource_owner(uri)
        if owner is None:
            code = (
                jsonrpc.INVALID_PARAMS if versions.is_modern(ctx.version) else (RESOURCE_NOT_FOUND)
            )
            raise RPCError(code, f"Resource not found: {uri}", {"uri": uri})
        return uri, self._full_backend(owner)

    async def resources_read(self, params: JSON, ctx: Context) -> JSON:
        uri, backend = self._resource_backend(params, ctx)
        return await self._pass(backend, "resources/read", {"uri": uri}, ctx, params)

    async def resources_subscribe(self, params: JSON, ctx: Context) -> JSON:
        uri, backend = self._resource_backend(params, ctx)
        session = self._session(ctx)
        if uri not in session.subscriptions:
            ctx.session = session = await self.sessions.update(
                session, subscriptions=(*session.subscriptions, uri)
            )
        if (await upstream_capabilities(backend)).get("resources", {}).get("subscribe"):
            await self._pass(backend, "resources/subscribe", {"uri": uri}, ctx, params)
        return {}

    async def resources_unsubscribe(self, params: JSON, ctx: Context) -> JSON:
        uri, _ = self._resource_backend(params, ctx)
        session = self._session(ctx)
        if uri in session.subscriptions:
            ctx.session = await self.sessions.update(
                session, subscriptions=tuple(s for s in session.subscriptions if s != uri)
            )
        # The upstream session is shared by every client of this worker, so it stays
        # subscribed; updates only reach sessions that still subscribe.
        return {}

    def _session(self, ctx: Context) -> SessionRecord:
        if ctx.session is None:
            raise RPCError(
                jsonrpc.INVALID_REQUEST, "Invalid Request: this method needs an MCP session"
            )
        return ctx.session

    # --- prompts -------------------------------------------------------------------------------

    async def prompts_list(self, params: JSON, ctx: Context) -> JSON:
        await self._refresh_view(ctx)
        return page(ctx.view.prompt_list, "prompts", params, self.registry.catalogue.version)

    async def prompts_get(self, params: JSON, ctx: Context) -> JSON:
        name = params.get("name")
        if not isinstance(name, str):
            raise invalid("'name' must be a string")
        prompt = ctx.view.prompts.get(name)
        if prompt is None or not prompt.enabled:
            raise invalid(f"unknown prompt: {name}")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise invalid("'arguments' must be an object")
        backend = self._full_backend(prompt.upstream)
        forwarded = {"name": prompt.definition.name, "arguments": arguments}
        return await self._pass(backend, "prompts/get", forwarded, ctx, params)

    # --- utilities -----------------------------------------------------------------------------

    async def complete(self, params: JSON, ctx: Context) -> JSON:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise invalid("'ref' must be an object")
        forwarded = dict(params)
        forwarded.pop("_meta", None)
        if ref.get("type") == "ref/prompt":
            prompt = ctx.view.prompts.get(str(ref.get("name")))
            if prompt is None or not prompt.enabled:
                raise invalid(f"unknown prompt: {ref.get('name')}")
            forwarded["ref"] = {**ref, "name": prompt.definition.name}
            backend = self._full_backend(prompt.upstream)
        elif ref.get("type") == "ref/resource":
            owner = ctx.view.resource_owner(str(ref.get("uri")))
            if owner is None:
                raise invalid(f"unknown resource: {ref.get('uri')}")
            backend = self._full_backend(owner)
        else:
            raise invalid("'ref.type' must be ref/prompt or ref/resource")
        if "completions" not in await upstream_capabilities(backend):
            return {"completion": {"values": [], "hasMore": False}}
        return await self._pass(backend, "completion/complete", forwarded, ctx, params)

    async def set_level(self, params: JSON, ctx: Context) -> JSON:
        level = params.get("level")
        if level not in versions.LOG_LEVELS:
            raise invalid(f"'level' must be one of {', '.join(versions.LOG_LEVELS)}")
        session = self._session(ctx)
        ctx.session = await self.sessions.update(session, log_level=level)
        ctx.log_level = str(level)
        return {}

    async def _pass(
        self, backend: FullBackend, method: str, forwarded: JSON, ctx: Context, params: JSON
    ) -> JSON:
        """Forward a request and pass the upstream's JSON-RPC error on as the client's."""
        meta = params.get("_meta")
        try:
            return await self.forward(
                backend, method, forwarded, ctx, meta if isinstance(meta, dict) else None
            )
        except UpstreamError as exc:
            code = exc.code
            if code == RESOURCE_NOT_FOUND and versions.is_modern(ctx.version):
                code = jsonrpc.INVALID_PARAMS  # 2026 retired -32002
            raise RPCError(code, exc.upstream_message, exc.data) from None
        except BackendError as exc:
            raise RPCError(jsonrpc.INTERNAL_ERROR, str(exc)) from None
        except TimeoutError:
            raise RPCError(jsonrpc.INTERNAL_ERROR, "upstream did not answer in time") from None
