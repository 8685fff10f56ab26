"""The one dispatcher every transport calls.

Transports parse bytes into JSON-RPC messages, authenticate, resolve the endpoint and frame
answers (JSON or SSE). Everything a message means is decided here, from one table: which
handler runs it, which protocol eras offer it, whether it needs a session, whether it counts
against the caller's rate limit, and how its failure becomes a JSON-RPC error. Requests of
a session run as tasks the client can cancel with `notifications/cancelled`, from any worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway import jsonrpc
from gateway.jsonrpc import Id, RPCError
from gateway.limits import RateLimited, RateLimiter
from gateway.mcp import versions
from gateway.mcp.asks import ClientAsks
from gateway.mcp.bridge import Bridge
from gateway.mcp.context import Context, Era
from gateway.mcp.hub import Hub
from gateway.mcp.inflight import InFlight
from gateway.mcp.methods import SERVER_INFO, Methods
from gateway.metrics import MCP_REQUESTS
from gateway.tracing import Tracing

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
Handler = Callable[[JSON, Context], Awaitable[Any]]
REQUEST_CANCELLED = -32800

ALL_ERAS = frozenset(Era)
SESSIONS = frozenset({Era.HANDSHAKE})
NO_SESSIONS = frozenset({Era.PLAIN, Era.MODERN})
BEFORE_2026 = frozenset({Era.PLAIN, Era.HANDSHAKE})


@dataclass(frozen=True, slots=True)
class MethodSpec:
    handler: Handler
    eras: frozenset[Era] = ALL_ERAS
    """The eras that offer the method; elsewhere it is -32601."""
    needs_session: bool = False
    limited: bool = True
    """Counts against the caller's `RATE_LIMIT_PER_MINUTE`."""
    target: str | None = None
    """The param naming what the request acts on upstream (`name` or `uri`): such requests
    may stream progress and log messages, and 2026 mirrors the param in `Mcp-Name`."""
    cacheable: bool = False
    """A 2026 client may cache the result (`ttlMs`, `cacheScope`)."""


def method_table(m: Methods) -> dict[str, MethodSpec]:
    return {
        "initialize": MethodSpec(m.initialize, BEFORE_2026),
        "ping": MethodSpec(m.ping, BEFORE_2026),
        "server/discover": MethodSpec(m.discover, NO_SESSIONS, cacheable=True),
        "subscriptions/listen": MethodSpec(m.listen, frozenset({Era.MODERN}), limited=False),
        "tools/list": MethodSpec(m.tools_list, cacheable=True),
        "tools/call": MethodSpec(m.tools_call, target="name"),
        "resources/list": MethodSpec(m.resources_list, cacheable=True),
        "resources/templates/list": MethodSpec(m.templates_list, cacheable=True),
        "resources/read": MethodSpec(m.resources_read, target="uri", cacheable=True),
        "resources/subscribe": MethodSpec(m.resources_subscribe, SESSIONS, needs_session=True),
        "resources/unsubscribe": MethodSpec(m.resources_unsubscribe, SESSIONS, needs_session=True),
        "prompts/list": MethodSpec(m.prompts_list, cacheable=True),
        "prompts/get": MethodSpec(m.prompts_get, target="name"),
        "completion/complete": MethodSpec(m.complete),
        "logging/setLevel": MethodSpec(m.set_level, SESSIONS, needs_session=True),
    }


@dataclass(slots=True)
class Reply:
    """The answer to one request: a result, or an error (possibly a cancellation)."""

    id: Id
    result: Any = None
    error: RPCError | None = None
    cancelled: bool = False

    def message(self) -> JSON:
        if self.error is None:
            return {"jsonrpc": "2.0", "id": self.id, "result": self.result}
        return {"jsonrpc": "2.0", "id": self.id, "error": self.error.to_dict()}

    def body(self) -> bytes:
        if self.error is None:
            return jsonrpc.result(self.id, self.result)
        return jsonrpc.error(self.id, self.error)


def decorate(spec: MethodSpec, result: JSON) -> JSON:
    """The 2026 result fields: `resultType`, cache hints and the server's identity."""
    decorated = {**result, "resultType": result.get("resultType", "complete")}
    if spec.cacheable:
        decorated.setdefault("ttlMs", 0)
        decorated.setdefault("cacheScope", "private")
    meta = dict(decorated.get("_meta") or {})
    meta[versions.META_SERVER_INFO] = SERVER_INFO
    decorated["_meta"] = meta
    return decorated


class Dispatcher:
    def __init__(
        self,
        methods: Methods,
        limits: RateLimiter,
        caller_limit: int,
        hub: Hub,
        asks: ClientAsks,
        bridge: Bridge,
        inflight: InFlight | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing
        self.methods = methods
        self.inflight = inflight or InFlight()
        self.asks = asks
        self.bridge = bridge
        self.table = method_table(methods)
        self.limits = limits
        self.caller_limit = caller_limit
        self.hub = hub

    def spec(self, method: str, ctx: Context) -> MethodSpec | None:
        """The method as offered in this context's era, or None where it is not."""
        spec = self.table.get(method)
        if spec is None or ctx.era not in spec.eras:
            return None
        return spec

    async def request(self, message: jsonrpc.Request, ctx: Context) -> Reply:
        """Run one request to its reply; never raises for the request's own failures."""
        session = ctx.session.id if ctx.session is not None else None
        try:
            self.inflight.enter(session, ctx.caller_key)
        except RPCError as exc:
            reply = Reply(message.id, error=exc)
        else:
            try:
                if self.tracing is None:
                    reply = await self._request(message, ctx)
                else:
                    reply = await self._traced(self.tracing, message, ctx, session)
            finally:
                self.inflight.leave(session, ctx.caller_key)
        method = message.method if message.method in self.table else "other"
        outcome = "ok" if reply.error is None else "cancelled" if reply.cancelled else "error"
        MCP_REQUESTS(method, outcome).inc()
        return reply

    async def _traced(
        self, tracing: Tracing, message: jsonrpc.Request, ctx: Context, session: str | None
    ) -> Reply:
        """`_request` inside the MCP request's span."""
        with tracing.mcp_request(message.method, message.params, session) as span:
            reply = await self._request(message, ctx)
            span.answered(None if reply.error is None else reply.error.code)
        return reply

    async def _request(self, message: jsonrpc.Request, ctx: Context) -> Reply:
        if ctx.session is None:
            return await self._run(message, ctx)
        task = asyncio.ensure_future(self._run(message, ctx))
        untrack = self.hub.track(ctx.session.id, message.id, task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                # Cancelled by the client's notifications/cancelled, not by its departure.
                error = RPCError(REQUEST_CANCELLED, "Request cancelled")
                return Reply(message.id, error=error, cancelled=True)
            raise
        finally:
            untrack()

    async def _run(self, message: jsonrpc.Request, ctx: Context) -> Reply:
        method, params = message.method, message.params
        spec = self.spec(method, ctx)
        try:
            if spec is None or spec.limited:
                await self.count_caller(ctx.caller_key)
            if spec is None:
                if ctx.era is Era.PLAIN and method in ctx.view.tools:
                    value = await self.methods.call_by_name(method, params, ctx)
                    return Reply(message.id, value)
                raise RPCError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}", method)
            if spec.needs_session and ctx.session is None:
                raise RPCError(
                    jsonrpc.INVALID_REQUEST, "Invalid Request: this method needs an MCP session"
                )
            if ctx.era is Era.MODERN and spec.target and "requestState" in params:
                # A retry after `input_required`: it continues a call, it starts nothing.
                value = await self.bridge.resume(method, params, ctx)
            else:
                value = await spec.handler(params, ctx)
            if ctx.era is Era.MODERN:
                value = decorate(spec, value)
            return Reply(message.id, value)
        except RPCError as exc:
            return Reply(message.id, error=exc)
        except Exception:
            log.exception("mcp method failed", method=method)
            return Reply(message.id, error=RPCError(jsonrpc.INTERNAL_ERROR, "Internal error"))

    async def count_caller(self, caller_key: str) -> None:
        """Count one message (a request, a notification, a stream opened) against the
        caller's `RATE_LIMIT_PER_MINUTE`; `RateLimited` past it."""
        if self.caller_limit:
            await self.limits.hit(f"caller:{caller_key}", "this caller", self.caller_limit)

    async def answer(self, response: jsonrpc.Response, ctx: Context) -> None:
        """Take a client's answer to a request relayed to it; `RPCError` if refused."""
        if ctx.session is None:
            raise RPCError(
                jsonrpc.INVALID_REQUEST,
                "Invalid Request: answers are taken only from the session that was asked",
            )
        await self.asks.answer(ctx.session.id, response)

    async def notification(self, message: jsonrpc.Request, ctx: Context) -> None:
        """Act on a client notification; those the gateway has no use for (initialized,
        roots/list_changed...) are dropped, and so is every one past the caller's rate limit
        (a notification has no answer to refuse it with)."""
        try:
            await self.count_caller(ctx.caller_key)
        except RateLimited:
            return
        if ctx.session is None:
            return
        if message.method == "notifications/cancelled" and "requestId" in message.params:
            await self.hub.cancel(ctx.session.id, message.params["requestId"])


def parse_message(item: Any) -> jsonrpc.Request | jsonrpc.Response:
    """An MCP request, notification, or response (to a request the gateway relayed) out of
    one decoded JSON value. Raises `RPCError` (-32600) for anything else."""
    if isinstance(item, dict) and "method" not in item and "id" in item:
        if "result" in item or "error" in item:
            if item.get("jsonrpc") != "2.0":
                raise RPCError(jsonrpc.INVALID_REQUEST, "Invalid Request: not JSON-RPC 2.0")
            return jsonrpc.Response(
                item["id"], item.get("result"), item.get("error"), "error" in item
            )
    if isinstance(item, dict) and "method" in item and "id" in item and item["id"] is None:
        raise RPCError(jsonrpc.INVALID_REQUEST, "Invalid Request: MCP request ids must not be null")
    return jsonrpc.parse_value(item)
