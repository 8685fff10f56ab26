"""Calling upstreams on a client's behalf: tool calls (with limits, the result cache, a
time budget and metrics) and forwarded requests, relaying what the upstream says about
the request (progress under the client's own token, log messages at the client's level)
back to the client's stream. Every `tools/call`, `resources/read` and `prompts/get` of
every transport passes the interceptor chain here: a refusal or a failing interceptor is
an `isError` result for a tool, and a JSON-RPC error for a resource or a prompt, which
have no error result."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import structlog

from gateway import jsonrpc
from gateway.catalogue import Tool
from gateway.contracts import AskClient, BackendError, FullBackend, UpstreamError
from gateway.deadlines import within
from gateway.ids import process_tag
from gateway.interceptors import Call, CallKind
from gateway.jsonrpc import RPCError
from gateway.limits import RateLimiter
from gateway.mcp import versions
from gateway.mcp.asks import URL_ELICITATION_REQUIRED, ClientAsks, takes_url_elicitation
from gateway.mcp.bridge import Bridge
from gateway.mcp.context import Context
from gateway.mcp.interception import Intercepted, Interceptors, Proceed
from gateway.metrics import TOOL_CALL_SECONDS, TOOL_CALLS
from gateway.registry import Registry
from gateway.results import ResultCache, result_key
from gateway.settings import Settings
from gateway.store import PromptRecord
from gateway.tracing import Tracing
from gateway.upstream_sessions import UpstreamSessions

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
RESOURCE_NOT_FOUND = -32002

_tokens = itertools.count(1)


def error_result(message: str) -> JSON:
    return {"content": [{"type": "text", "text": message}], "isError": True}


class InvalidArguments(RPCError):
    """Arguments that fail a tool's input schema: `-32602`, which `tools/call` answers as an
    `isError` result where the version wants it (`versions.argument_errors_are_results`)."""

    def __init__(self, tool: str, problem: str) -> None:
        super().__init__(jsonrpc.INVALID_PARAMS, f"Invalid arguments for {tool}: {problem}")


async def upstream_capabilities(backend: FullBackend) -> JSON:
    try:
        await backend.connect()
    except BackendError:
        return {}
    return backend.capabilities


class UpstreamCalls:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        results: ResultCache,
        limits: RateLimiter,
        asks: ClientAsks,
        upstream_sessions: UpstreamSessions,
        bridge: Bridge,
        interceptors: Interceptors,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing
        self.interceptors = interceptors
        self.asks = asks
        self.bridge = bridge
        self.upstream_sessions = upstream_sessions
        self.settings = settings
        self.registry = registry
        self.results = results
        self.limits = limits

    def full_backend(self, upstream: str, ctx: Context | None = None) -> FullBackend:
        """The backend serving `upstream`; for a per-client upstream, the one of `ctx`'s
        client session (or of its request alone, without one). None: the shared one."""
        if ctx is not None and upstream in self.registry.per_client:
            client = ctx.session.id if ctx.session is not None else None
            return self.upstream_sessions.backend_for(upstream, client)
        backend = self.registry.full_backends.get(upstream)
        if backend is None:
            raise RPCError(
                jsonrpc.INTERNAL_ERROR, f"upstream '{upstream}' cannot serve this request"
            )
        return backend

    @staticmethod
    def _seen(ctx: Context, kind: CallKind, name: str, arguments: JSON, upstream: str) -> Call:
        """The call as interceptors see it."""
        return Call(ctx.caller, ctx.endpoint.server, kind, name, arguments, upstream)

    async def call_tool(
        self, tool: Tool, arguments: JSON, ctx: Context, meta: JSON | None = None
    ) -> JSON:
        """Run the interceptors around the checked call."""
        chain = self.interceptors.chain(ctx.view.server)
        if not chain:
            return await self._checked_call(tool, arguments, ctx, meta)
        meta = _progress_only(meta)

        async def proceed(final: JSON) -> JSON:
            return await self._checked_call(tool, final, ctx, meta)

        call = self._seen(ctx, "tool", tool.record.name, arguments, tool.record.upstream)
        try:
            return await self.interceptors.run(chain, call, proceed)
        except Intercepted as exc:
            return error_result(exc.message)

    async def read_resource(self, uri: str, owner: str, ctx: Context, params: JSON) -> JSON:
        backend = self.full_backend(owner, ctx)
        params = self._past_interceptors(params, ctx)

        async def proceed(final: JSON) -> JSON:
            return await self.passthrough(
                backend, "resources/read", {"uri": uri}, ctx, params, upstream=owner
            )

        return await self._intercepted(self._seen(ctx, "resource", uri, {}, owner), ctx, proceed)

    async def get_prompt(
        self, prompt: PromptRecord, arguments: JSON, ctx: Context, params: JSON
    ) -> JSON:
        backend = self.full_backend(prompt.upstream, ctx)
        params = self._past_interceptors(params, ctx)

        async def proceed(final: JSON) -> JSON:
            forwarded = {"name": prompt.definition.name, "arguments": final}
            return await self.passthrough(
                backend, "prompts/get", forwarded, ctx, params, upstream=prompt.upstream
            )

        call = self._seen(ctx, "prompt", prompt.name, arguments, prompt.upstream)
        return await self._intercepted(call, ctx, proceed)

    def _past_interceptors(self, params: JSON, ctx: Context) -> JSON:
        """`params` as they go upstream: when interceptors see the call, which see its
        arguments only, no more of the client's `_meta` than its progress token."""
        if "_meta" not in params or not self.interceptors.chain(ctx.view.server):
            return params
        meta = params["_meta"]
        return {**params, "_meta": _progress_only(meta if isinstance(meta, dict) else None)}

    async def _intercepted(self, call: Call, ctx: Context, proceed: Proceed) -> JSON:
        """A resource read or prompt through the chain; refusals are JSON-RPC errors."""
        chain = self.interceptors.chain(ctx.view.server)
        if not chain:
            return await proceed(call.arguments)
        try:
            return await self.interceptors.run(chain, call, proceed)
        except Intercepted as exc:
            code = jsonrpc.INTERNAL_ERROR if exc.failed else jsonrpc.INVALID_PARAMS
            raise RPCError(code, exc.message, {"interceptor": exc.interceptor}) from None

    async def _checked_call(
        self, tool: Tool, arguments: JSON, ctx: Context, meta: JSON | None
    ) -> JSON:
        """Check the arguments and limits, then answer from the result cache or upstream."""
        name = tool.record.name
        problem = tool.check(arguments)
        if problem is not None:
            raise InvalidArguments(name, problem)
        record = tool.record
        limit = record.rate_limit or self.settings.tool_rate_limit_per_minute
        if limit:
            await self.limits.hit(f"tool:{name}", f"tool '{name}'", limit)
        if not record.cache_ttl:
            return await self._call(tool, arguments, ctx, meta)
        key = result_key(name, arguments, ctx.caller.subject)
        cached = await self.results.get(key)
        if cached is not None:
            return cached
        result = await self._call(tool, arguments, ctx, meta)
        if result.get("resultType") == "input_required":
            return result  # only a call's final result is worth keeping
        return await self.results.put(key, result, record.cache_ttl)

    async def _call(self, tool: Tool, arguments: JSON, ctx: Context, meta: JSON | None) -> JSON:
        """The upstream's answer; for a 2026 client that can be asked things, the era
        bridge's, which may be `input_required`."""
        if not self.bridge.wanted(ctx) or tool.record.upstream not in self.registry.full_backends:
            return await self._call_upstream(tool, arguments, ctx, meta)

        async def work(call_ctx: Context, ask: AskClient | None) -> JSON:
            return await self._call_upstream(tool, arguments, call_ctx, meta, ask)

        return await self.bridge.call(ctx, tool.record.name, work)

    async def _call_upstream(
        self,
        tool: Tool,
        arguments: JSON,
        ctx: Context,
        meta: JSON | None,
        on_request: AskClient | None = None,
    ) -> JSON:
        upstream = tool.record.upstream
        backend = self.registry.backends.get(upstream)
        if backend is None:
            return error_result(f"upstream '{upstream}' has no backend in this gateway")
        timeout = self.settings.tool_timeout
        started = time.perf_counter()
        outcome = "ok"
        span = None
        if self.tracing is not None:
            span = self.tracing.upstream_call(upstream, "tools/call", tool.record.definition.name)
        failure: str | None = None
        try:
            async with within(timeout):
                full = self.registry.full_backends.get(upstream)
                if upstream in self.registry.per_client:
                    backend = full = self.full_backend(upstream, ctx)
                name = tool.record.definition.name
                if full is None or (ctx.emit is None and on_request is None):
                    # Nothing to relay: the plain call (backends cancel upstream themselves
                    # when the caller goes away).
                    passed = passed_meta(meta)
                    if full is None or passed is None:
                        return await backend.call_tool(name, arguments, timeout)
                    plain: JSON = {"name": name, "arguments": arguments, "_meta": passed}
                    return await full.request("tools/call", plain, timeout)
                params: JSON = {"name": name, "arguments": arguments}
                return await self.forward(
                    full, "tools/call", params, ctx, meta, timeout, on_request
                )
        except BackendError as exc:
            outcome, failure = "error", str(exc)
            if isinstance(exc, UpstreamError) and url_elicitation_required(exc, ctx):
                # The client is to open the URLs in its data, then call again.
                raise RPCError(exc.code, exc.upstream_message, exc.data) from None
            log.warning(
                "upstream call failed", tool=tool.record.name, upstream=upstream, error=str(exc)
            )
            return error_result(str(exc))
        except TimeoutError:
            outcome = "timeout"
            log.warning("upstream call timed out", tool=tool.record.name, upstream=upstream)
            return error_result(f"upstream '{upstream}' did not answer within {timeout:g}s")
        except BaseException as exc:
            if span is not None:  # cancelled, or a failure that is not the upstream's
                span.end(_unfinished(exc), type(exc).__name__)
                span = None
            raise
        finally:
            if span is not None:
                span.end(outcome, failure)
            TOOL_CALL_SECONDS(upstream).observe(time.perf_counter() - started)
            TOOL_CALLS(upstream, tool.record.name, outcome).inc()

    async def forward(
        self,
        backend: FullBackend,
        method: str,
        params: JSON,
        ctx: Context,
        meta: JSON | None,
        timeout: float | None = None,
        on_request: AskClient | None = None,
    ) -> JSON:
        """Send a request upstream, relaying its progress (under the client's own token) and
        log messages (at the client's level) to the client's stream, and what it asks its
        client to `on_request` (by default, the client's stream)."""
        client_token = (meta or {}).get("progressToken")
        relay = None
        passed = passed_meta(meta)
        if passed is not None:
            params = {**params, "_meta": passed}
        if ctx.emit is not None:
            emit = ctx.emit
            if client_token is not None:
                token = f"gw-{process_tag()}-{next(_tokens)}"
                params = {**params, "_meta": {**(passed or {}), "progressToken": token}}

            async def relay(note_method: str, note: JSON) -> None:
                if note_method == "notifications/progress":
                    if client_token is None:
                        return
                    note = {**note, "progressToken": client_token}
                elif note_method == "notifications/message":
                    if ctx.modern and ctx.log_level is None:
                        return  # 2026: no log messages without a per-request opt-in
                    if not versions.log_level_allows(ctx.log_level, str(note.get("level"))):
                        return
                else:
                    return
                await emit({"jsonrpc": "2.0", "method": note_method, "params": note})

        return await backend.request(
            method,
            params,
            timeout or self.settings.tool_timeout,
            relay,
            on_request=on_request or self.asks.asker(ctx),
        )

    async def passthrough(
        self,
        backend: FullBackend,
        method: str,
        forwarded: JSON,
        ctx: Context,
        params: JSON,
        upstream: str = "",
    ) -> JSON:
        """Forward a request and pass the upstream's JSON-RPC error on as the client's,
        inside a client span when tracing is on (naming `upstream` when given)."""
        meta = params.get("_meta")
        span = None
        if self.tracing is not None:
            target = forwarded.get("name") if method == "prompts/get" else None
            span = self.tracing.upstream_call(upstream, method, target)
        outcome, failure = "error", None
        try:
            answer = await self.forward(
                backend, method, forwarded, ctx, meta if isinstance(meta, dict) else None
            )
            outcome = "ok"
            return answer
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            failure = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                outcome = "timeout"
            passed_on = _client_error(exc, ctx)
            if passed_on is None:
                raise
            raise passed_on from None
        finally:
            if span is not None:
                span.end(outcome, failure)


def passed_meta(meta: JSON | None) -> JSON | None:
    """What of a client request's `_meta` goes on to the upstream, as it would reach the
    upstream directly: every key but `progressToken` (the gateway sends a token of its own
    when it relays progress) and the protocol's own keys, which belong to the hop between
    the client and the gateway (a prefix with a label `modelcontextprotocol` or `mcp`, such
    as the 2026-07-28 envelope's `io.modelcontextprotocol/...`; the spec reserves these
    for MCP). None when nothing is left."""
    if not meta:
        return None
    passed = {key: value for key, value in meta.items() if _end_to_end(key)}
    return passed or None


def _progress_only(meta: JSON | None) -> JSON | None:
    """A client's `_meta` cut to its progress token: what goes on past interceptors, which
    see a call's arguments only, so that nothing else of the client's can slip by a
    guardrail."""
    if not meta or "progressToken" not in meta:
        return None
    return {"progressToken": meta["progressToken"]}


_RESERVED_LABELS = frozenset({"modelcontextprotocol", "mcp"})


def _end_to_end(key: str) -> bool:
    if key == "progressToken":
        return False
    prefix, slash, _ = key.partition("/")
    return not (slash and _RESERVED_LABELS.intersection(prefix.lower().split(".")))


def url_elicitation_required(exc: UpstreamError, ctx: Context) -> bool:
    """Whether a call's failure is the upstream asking for URL elicitations, which a client
    that takes them gets as that error, its data intact: any other upstream error is an
    `isError` result."""
    return exc.code == URL_ELICITATION_REQUIRED and takes_url_elicitation(ctx)


def _client_error(exc: Exception, ctx: Context) -> RPCError | None:
    """A forwarded request's failure as the client's JSON-RPC error (None: not one we map)."""
    if isinstance(exc, UpstreamError):
        code = exc.code
        if code == RESOURCE_NOT_FOUND and ctx.modern:
            code = jsonrpc.INVALID_PARAMS  # 2026 retired -32002
        return RPCError(code, exc.upstream_message, exc.data)
    if isinstance(exc, BackendError):
        return RPCError(jsonrpc.INTERNAL_ERROR, str(exc))
    if isinstance(exc, TimeoutError):
        return RPCError(jsonrpc.INTERNAL_ERROR, "upstream did not answer in time")
    return None


def _unfinished(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
