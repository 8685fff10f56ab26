"""OpenTelemetry tracing (the `otel` extra): spans for client requests and upstream calls,
exported over OTLP/HTTP in batches.

Imported only by `gateway.tracing_setup.tracing_ctx` when tracing is on. The provider is the
worker's own, never the global one, and is configured from `Settings` alone: the OTEL_*
variables are read with the others in `gateway.settings`.

Spans:
- `SERVER`, one per HTTP request, named `METHOD route` (`POST /mcp`), continuing incoming
  W3C `traceparent`/`tracestate` headers; it carries the route, the status, and, for an MCP
  request, its method, tool or prompt name and a hash of its session id (never the id, a
  token or arguments).
- `INTERNAL`, one per MCP request of that HTTP request (a batch has several), named after
  its method and target (`tools/call weather__forecast`), with its JSON-RPC error code if any;
  without a header, a `traceparent` in the request's `params._meta` (SEP-414) is its parent.
- `CLIENT`, one per call to an upstream (`tools/call`, `resources/read`, `prompts/get`), with
  the upstream's name, the tool and the outcome; its context goes upstream (`gateway.tracing`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from typing import Any

import structlog
from aiohttp import web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.ids import process_tag
from gateway.settings import Settings
from gateway.tracing import JSON, OUTBOUND, TRACE_KEYS, Handler, Outbound, session_hash

_PROPAGATOR = TraceContextTextMapPropagator()
DEFAULT_ENDPOINT = "http://localhost:4318"
EXPORT_TIMEOUT = 5.0
"""Seconds one export may take; a collector that is away costs the batch, not the worker."""
MAX_QUEUED_SPANS = 2048
"""Finished spans waiting for export; past it new ones are dropped, requests never wait."""
EXPORT_BATCH = 512
_NAMED = {"tools/call": "gen_ai.tool.name", "prompts/get": "gen_ai.prompt.name"}


def traces_endpoint(settings: Settings) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else OTEL_EXPORTER_OTLP_ENDPOINT (or the
    local collector) with the signal's path, as the OTLP exporter specification says."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    base = settings.otel_exporter_otlp_endpoint or DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def sampler(settings: Settings) -> Sampler:
    ratio = TraceIdRatioBased(settings.otel_traces_sampler_arg)
    return {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(ratio),
    }[settings.otel_traces_sampler]


def build_provider(settings: Settings) -> TracerProvider:
    attributes: dict[str, Any] = dict(settings.otel_resource_attributes)
    attributes["service.name"] = settings.otel_service_name
    attributes.setdefault("service.version", __version__)
    # Each gunicorn worker is an instance of its own: its spans say which one made them.
    attributes.setdefault("service.instance.id", f"{os.getpid()}-{process_tag()}")
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler(settings))
    exporter = OTLPSpanExporter(
        endpoint=traces_endpoint(settings),
        headers=dict(settings.otel_exporter_otlp_headers),
        timeout=EXPORT_TIMEOUT,
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=MAX_QUEUED_SPANS,
            max_export_batch_size=EXPORT_BATCH,
            schedule_delay_millis=settings.otel_bsp_schedule_delay,
        )
    )
    return provider


class _UpstreamSpan:
    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span, token: Token[Outbound | None]) -> None:
        self.span = span
        self.token = token

    def end(self, outcome: str, error: str | None = None) -> None:
        self.span.set_attribute("gateway.outcome", outcome)
        if outcome != "ok":
            self.span.set_status(Status(StatusCode.ERROR, error or outcome))
        OUTBOUND.reset(self.token)
        self.span.end()


class _McpSpan:
    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def answered(self, error_code: int | None) -> None:
        if error_code is not None:
            self.span.set_attribute("rpc.jsonrpc.error_code", error_code)
            self.span.set_status(Status(StatusCode.ERROR))


def _carried(params: JSON) -> Context | None:
    """The trace context a request carries in `params._meta`, if a valid one."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
        return None
    fields = {key: meta[key] for key in TRACE_KEYS if isinstance(meta.get(key), str)}
    carried = _PROPAGATOR.extract(fields)
    return carried if trace.get_current_span(carried).get_span_context().is_valid else None


def _ids(span: trace.Span) -> dict[str, str]:
    """`span`'s trace and span ids as log fields (none for an invalid span)."""
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _continues_remote(span: trace.Span) -> bool:
    """Whether `span` (the HTTP request's) continues a trace the client sent in headers."""
    parent = getattr(span, "parent", None)
    return parent is not None and bool(parent.is_remote)


class OtelTracing:
    """`gateway.tracing.Tracing` over an OpenTelemetry SDK tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("aio-mcp-gateway", __version__)

    @classmethod
    def start(cls, settings: Settings) -> OtelTracing:
        return cls(build_provider(settings))

    async def close(self) -> None:
        """Export what is left, then stop the exporter's thread (off the event loop)."""
        await asyncio.to_thread(self.provider.shutdown)

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        parent = _PROPAGATOR.extract(request.headers)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        attributes = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
        }
        if route:
            attributes["http.route"] = route
        with self.tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                span.set_attribute("http.response.status_code", exc.status)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    @contextmanager
    def mcp_request(self, method: str, params: JSON, session: str | None) -> Iterator[_McpSpan]:
        attributes: dict[str, str] = {"mcp.method.name": method}
        target = params.get("name") if method in _NAMED else None
        if isinstance(target, str):
            attributes[_NAMED[method]] = target
        if session is not None:
            attributes["gateway.session.hash"] = session_hash(session)
        server = trace.get_current_span()
        if server.is_recording():
            server.set_attributes(attributes)
        name = f"{method} {target}" if isinstance(target, str) else method
        parent, links = None, []
        carried = _carried(params)
        if carried is not None and not _continues_remote(server):
            # No traceparent header, but one in `_meta` (SEP-414): the request joins the
            # client's trace there, linked to the HTTP request's span.
            parent = carried
            if server.get_span_context().is_valid:
                links.append(Link(server.get_span_context()))
        with (
            self.tracer.start_as_current_span(
                name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes, links=links
            ) as span,
            structlog.contextvars.bound_contextvars(**_ids(span)),
        ):
            yield _McpSpan(span)

    def log_ids(self) -> dict[str, str]:
        return _ids(trace.get_current_span())

    def upstream_call(self, upstream: str, method: str, target: str | None) -> _UpstreamSpan:
        attributes = {"mcp.method.name": method}
        if upstream:
            attributes["gateway.upstream"] = upstream
        if target is not None and method in _NAMED:
            attributes[_NAMED[method]] = target
        span = self.tracer.start_span(
            f"{method} {target}" if target else method, kind=SpanKind.CLIENT, attributes=attributes
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return _UpstreamSpan(span, OUTBOUND.set(Outbound(carrier)))
