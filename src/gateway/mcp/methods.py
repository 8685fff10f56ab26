"""The MCP methods the gateway serves: one handler per method, the same for every transport
and version. Which handler runs, for whom and in which era, is the dispatcher's business
(`dispatch.py`); handlers raise `RPCError`, and tool failures are `isError` results."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from gateway import __version__, jsonrpc
from gateway.cacheuse import CacheUnavailable
from gateway.catalogue import Tool, View
from gateway.jsonrpc import RPCError
from gateway.logconfig import short_hash
from gateway.mcp import permissions, versions
from gateway.mcp.context import Context, Era
from gateway.mcp.tool_search import ToolSearchCalls
from gateway.mcp.upstream_calls import (
    RESOURCE_NOT_FOUND,
    InvalidArguments,
    UpstreamCalls,
    error_result,
    upstream_capabilities,
)
from gateway.registry import Registry
from gateway.sessions import SessionRecord, SessionStore

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
PAGE_SIZE = 100
SERVER_INFO = {"name": "aio-mcp-gateway", "version": __version__}
CAPABILITIES: JSON = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
}
LISTEN_FLAGS = ("toolsListChanged", "promptsListChanged", "resourcesListChanged")


class SessionStoreUnavailable(RPCError):
    """The cache holding sessions cannot be reached: HTTP 503 where HTTP carries it."""

    status = 503

    def __init__(self) -> None:
        super().__init__(jsonrpc.INTERNAL_ERROR, "Session store unavailable")


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


def honoured_listen_flags(requested: JSON) -> JSON:
    """What a `subscriptions/listen` request asked for that the gateway can deliver."""
    honoured: JSON = {flag: True for flag in LISTEN_FLAGS if requested.get(flag) is True}
    uris = requested.get("resourceSubscriptions")
    if isinstance(uris, list) and uris and all(isinstance(u, str) for u in uris):
        honoured["resourceSubscriptions"] = uris
    return honoured


def _meta(params: JSON) -> JSON | None:
    meta = params.get("_meta")
    return meta if isinstance(meta, dict) else None


class Methods:
    def __init__(
        self,
        registry: Registry,
        sessions: SessionStore,
        calls: UpstreamCalls,
        session_changed: Callable[[str], Awaitable[None]],
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.calls = calls
        self.session_changed = session_changed
        """Returns once every worker has dropped its copy of the session's record."""
        self.search = ToolSearchCalls(calls)

    # --- lifecycle -----------------------------------------------------------------------

    @staticmethod
    def _described(result: JSON, view: View) -> JSON:
        if view.server is not None and view.server.description:
            result["instructions"] = view.server.description
        return result

    async def initialize(self, params: JSON, ctx: Context) -> JSON:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise invalid("'protocolVersion' is required and must be a string")
        # Both are kept with the session, in the cache, for its whole life.
        limit = self.registry.settings.max_initialize_bytes
        for name in ("clientInfo", "capabilities"):
            if name in params and len(orjson.dumps(params[name])) > limit:
                raise invalid(f"'{name}' is larger than MAX_INITIALIZE_BYTES ({limit} bytes)")
        result: JSON = {
            "protocolVersion": versions.negotiate(requested),
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO,
        }
        if ctx.era is Era.HANDSHAKE:
            ctx.session = await self._handshake(params, result["protocolVersion"], ctx)
        return self._described(result, ctx.view)

    async def _handshake(self, params: JSON, version: str, ctx: Context) -> SessionRecord:
        """Open the session the handshake starts, or record it on the one the transport
        opened already (legacy SSE opens its session with the stream)."""
        info = params.get("clientInfo")
        capabilities = params.get("capabilities")
        client_info = info if isinstance(info, dict) else {}
        client_capabilities = capabilities if isinstance(capabilities, dict) else {}
        if ctx.session is not None:
            try:
                return await self.sessions.update(
                    ctx.session,
                    protocol_version=version,
                    client_info=client_info,
                    client_capabilities=client_capabilities,
                )
            except CacheUnavailable:
                return ctx.session
        try:
            session = await self.sessions.create(
                protocol_version=version,
                subject=ctx.caller.subject,
                owner=ctx.endpoint.caller_key,
                server=ctx.endpoint.server,
                transport=ctx.transport,
                client_info=client_info,
                client_capabilities=client_capabilities,
            )
        except CacheUnavailable:
            raise SessionStoreUnavailable() from None
        log.info(
            "mcp session opened",
            session=short_hash(session.id),
            version=version,
            server=ctx.endpoint.server,
        )
        return session

    async def discover(self, params: JSON, ctx: Context) -> JSON:
        result: JSON = {
            "supportedVersions": list(versions.SUPPORTED_VERSIONS),
            "capabilities": CAPABILITIES,
        }
        return self._described(result, ctx.view)

    async def ping(self, params: JSON, ctx: Context) -> JSON:
        return {}

    # --- lists -----------------------------------------------------------------------------

    async def _current_view(self, ctx: Context) -> View:
        """Lists are answered from the newest catalogue any worker has published."""
        await self.registry.ensure_current()
        server = ctx.view.server.id if ctx.view.server else None
        ctx.view = self.registry.catalogue.view(server) or ctx.view
        return ctx.view

    async def _page(self, ctx: Context, params: JSON, key: str, listing: str) -> JSON:
        view = await self._current_view(ctx)
        items: list[JSON] = getattr(view, listing)
        items = permissions.listed(ctx.endpoint.grant, view, listing, items)
        return page(items, key, params, self.registry.catalogue.version)

    async def tools_list(self, params: JSON, ctx: Context) -> JSON:
        return await self._page(ctx, params, "tools", "tool_list")

    async def resources_list(self, params: JSON, ctx: Context) -> JSON:
        return await self._page(ctx, params, "resources", "resource_list")

    async def templates_list(self, params: JSON, ctx: Context) -> JSON:
        return await self._page(ctx, params, "resourceTemplates", "template_list")

    async def prompts_list(self, params: JSON, ctx: Context) -> JSON:
        return await self._page(ctx, params, "prompts", "prompt_list")

    # --- tools -----------------------------------------------------------------------------

    async def tools_call(self, params: JSON, ctx: Context) -> JSON:
        name = params.get("name")
        if not isinstance(name, str):
            raise invalid("'name' must be a string")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise invalid("'arguments' must be an object")
        try:
            if self.search.handles(name, ctx):
                return await self.search.call(name, arguments, ctx, _meta(params))
            tool = self.find_tool(name, ctx)
            return await self.calls.call_tool(tool, arguments, ctx, _meta(params))
        except InvalidArguments as exc:
            if ctx.era is Era.PLAIN or not versions.argument_errors_are_results(ctx.version):
                raise
            return error_result(exc.message)

    async def call_by_name(self, name: str, arguments: JSON, ctx: Context) -> JSON:
        """Direct invocation on `/rpc`: the method is the tool, the params its arguments."""
        return await self.calls.call_tool(self.find_tool(name, ctx), arguments, ctx)

    @staticmethod
    def find_tool(name: str, ctx: Context) -> Tool:
        tool = ctx.view.tools.get(name)
        # 2026 keeps -32601 (HTTP 404) for unknown methods; an unknown tool is a bad param.
        code = jsonrpc.INVALID_PARAMS if ctx.modern else jsonrpc.METHOD_NOT_FOUND
        if tool is None:
            raise RPCError(code, f"Unknown tool: {name}")
        if not tool.record.enabled:
            raise RPCError(code, f"Tool is disabled: {name}")
        permissions.check_tool(ctx, tool)
        return tool

    # --- resources ---------------------------------------------------------------------------

    def _resource_owner(self, params: JSON, ctx: Context) -> tuple[str, str]:
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise invalid("'uri' must be a non-empty string")
        owner = ctx.view.resource_owner(uri)
        if owner is None:
            code = jsonrpc.INVALID_PARAMS if ctx.modern else RESOURCE_NOT_FOUND
            raise RPCError(code, f"Resource not found: {uri}", {"uri": uri})
        permissions.check_resource(ctx, uri)
        return uri, owner

    async def resources_read(self, params: JSON, ctx: Context) -> JSON:
        uri, owner = self._resource_owner(params, ctx)
        return await self.calls.read_resource(uri, owner, ctx, params)

    async def resources_subscribe(self, params: JSON, ctx: Context) -> JSON:
        uri, owner = self._resource_owner(params, ctx)
        # The shared session: it holds the event stream that updates arrive on.
        backend = self.calls.full_backend(owner)
        session = ctx.session
        assert session is not None  # the dispatcher admits this method only with a session
        if uri not in session.subscriptions:
            ctx.session = await self.sessions.update(
                session, subscriptions=(*session.subscriptions, uri)
            )
            # The client's stream may be on another worker, whose copy of the session must
            # not miss an update that follows this answer.
            await self.session_changed(session.id)
        if (await upstream_capabilities(backend)).get("resources", {}).get("subscribe"):
            await self.calls.passthrough(backend, "resources/subscribe", {"uri": uri}, ctx, params)
        return {}

    async def resources_unsubscribe(self, params: JSON, ctx: Context) -> JSON:
        uri, _ = self._resource_owner(params, ctx)
        session = ctx.session
        assert session is not None
        if uri in session.subscriptions:
            ctx.session = await self.sessions.update(
                session, subscriptions=tuple(s for s in session.subscriptions if s != uri)
            )
            await self.session_changed(session.id)
        # The upstream session is shared by every client of this worker, so it stays
        # subscribed; updates only reach sessions that still subscribe.
        return {}

    async def listen(self, params: JSON, ctx: Context) -> JSON:
        """2026 `subscriptions/listen`: subscribe upstream to the resources asked for and
        answer what will be delivered; the transport then holds the stream open."""
        requested = params.get("notifications")
        flags = honoured_listen_flags(requested if isinstance(requested, dict) else {})
        for uri in flags.get("resourceSubscriptions", ()):
            grant = ctx.endpoint.grant
            if grant is not None and not grant.uses("resources", (uri,)):
                continue
            owner = ctx.view.resource_owner(uri)
            backend = self.registry.full_backends.get(owner) if owner else None
            if backend is None:
                continue
            if not (await upstream_capabilities(backend)).get("resources", {}).get("subscribe"):
                continue
            try:
                await self.calls.forward(backend, "resources/subscribe", {"uri": uri}, ctx, None)
            except Exception as exc:
                log.warning("upstream subscribe failed", uri=uri, error=str(exc))
        return {"notifications": flags}

    # --- prompts -------------------------------------------------------------------------------

    async def prompts_get(self, params: JSON, ctx: Context) -> JSON:
        name = params.get("name")
        if not isinstance(name, str):
            raise invalid("'name' must be a string")
        prompt = ctx.view.prompts.get(name)
        if prompt is None or not prompt.enabled:
            raise invalid(f"unknown prompt: {name}")
        permissions.check_prompt(ctx, name)
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise invalid("'arguments' must be an object")
        return await self.calls.get_prompt(prompt, arguments, ctx, params)

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
            permissions.check_prompt(ctx, prompt.name)
            forwarded["ref"] = {**ref, "name": prompt.definition.name}
            owner = prompt.upstream
        elif ref.get("type") == "ref/resource":
            found = ctx.view.resource_owner(str(ref.get("uri")))
            if found is None:
                raise invalid(f"unknown resource: {ref.get('uri')}")
            permissions.check_resource(ctx, str(ref.get("uri")))
            owner = found
        else:
            raise invalid("'ref.type' must be ref/prompt or ref/resource")
        backend = self.calls.full_backend(owner, ctx)
        if "completions" not in await upstream_capabilities(backend):
            return {"completion": {"values": [], "hasMore": False}}
        return await self.calls.passthrough(backend, "completion/complete", forwarded, ctx, params)

    async def set_level(self, params: JSON, ctx: Context) -> JSON:
        level = params.get("level")
        if level not in versions.LOG_LEVELS:
            raise invalid(f"'level' must be one of {', '.join(versions.LOG_LEVELS)}")
        session = ctx.session
        assert session is not None
        ctx.session = await self.sessions.update(session, log_level=level)
        ctx.log_level = str(level)
        return {}
