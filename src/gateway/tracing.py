"""Tracing as the rest of the gateway sees it, without importing OpenTelemetry.

Tracing is optional (`pip install 'aio-mcp-gateway[otel]'`) and on only when an OTLP
endpoint is configured (`wanted`). The OpenTelemetry side lives in `gateway.otel`, imported
by `gateway.tracing_setup` alone; everything else holds a `Tracing` or None, so with tracing off the
hot path pays one None check per request and per upstream call, and imports nothing.

What goes upstream: while a client span is open, `OUTBOUND` holds its W3C trace context.
HTTP transports send it as `traceparent`/`tracestate` headers (`outbound_headers`), and every
JSON-RPC request to an upstream carries it in `params._meta` (`with_trace_meta`), where MCP
reserves those keys for W3C Trace Context (SEP-414), so stdio upstreams get it too.
A third-party backend that writes its own JSON-RPC requests calls `with_trace_meta` on their
params (`gateway.plugin` exports it).

What goes in the logs: each log line of a traced request carries `trace_id` and `span_id`,
those of its server span, or of its MCP request's span while that is open.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Protocol

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, web

from gateway.settings import Settings

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TRACE_KEYS = ("traceparent", "tracestate")


class Outbound:
    """The trace context an upstream request carries: as fields and as HTTP header lines."""

    __slots__ = ("fields", "header_lines")

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = {key: fields[key] for key in TRACE_KEYS if fields.get(key)}
        self.header_lines = "".join(f"{k}: {v}\r\n" for k, v in self.fields.items()).encode()


OUTBOUND: ContextVar[Outbound | None] = ContextVar("gateway_trace_outbound", default=None)
_NONE: Mapping[str, str] = {}


def outbound_headers() -> Mapping[str, str]:
    """The trace headers for an upstream HTTP request made now (none outside a span)."""
    outbound = OUTBOUND.get()
    return _NONE if outbound is None else outbound.fields


def outbound_header_lines() -> bytes:
    """`outbound_headers` as encoded header lines, for the raw HTTP client."""
    outbound = OUTBOUND.get()
    return b"" if outbound is None else outbound.header_lines


def with_trace_meta(params: JSON | None) -> JSON | None:
    """`params` with the open client span's context in `_meta` (as they are without one)."""
    outbound = OUTBOUND.get()
    if outbound is None or not outbound.fields:
        return params
    params = dict(params or {})
    meta = params.get("_meta")
    params["_meta"] = {**(meta if isinstance(meta, dict) else {}), **outbound.fields}
    return params


def session_hash(session_id: str) -> str:
    """What a span says of a client session: enough to group its requests, not its id."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


class UpstreamSpan(Protocol):
    def end(self, outcome: str, error: str | None = None) -> None:
        """Close the span with the call's outcome (`ok`, `error`, `timeout`...)."""


class McpSpan(Protocol):
    def answered(self, error_code: int | None) -> None:
        """Record how the request was answered (its JSON-RPC error code, if any)."""


class Tracing(Protocol):
    """The spans the gateway makes; `gateway.otel.OtelTracing` is the one implementation."""

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Run `handler` inside the request's server span."""

    def mcp_request(
        self, method: str, params: JSON, session: str | None
    ) -> AbstractContextManager[McpSpan]:
        """A span for one MCP request, child of its HTTP request's span."""

    def upstream_call(self, upstream: str, method: str, target: str | None) -> UpstreamSpan:
        """Open a client span for a call to `upstream`; `OUTBOUND` carries it until `end`."""

    def log_ids(self) -> dict[str, str]:
        """The current span's `trace_id` and `span_id` (hex) for log lines; none outside one."""


def wanted(settings: Settings) -> bool:
    """Tracing is on with an OTLP endpoint, unless switched off (OTEL_ENABLED=false or
    OTEL_SDK_DISABLED=true); OTEL_ENABLED=true alone means the default local collector."""
    if settings.otel_sdk_disabled or settings.otel_enabled is False:
        return False
    endpoint = settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint
    return bool(endpoint) or settings.otel_enabled is True


async def send_trace_context(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """aiohttp client middleware: the open client span's context on an upstream request."""
    outbound = OUTBOUND.get()
    if outbound is not None:
        request.headers.update(outbound.fields)
    return await handler(request)
