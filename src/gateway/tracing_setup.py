"""Tracing in the application: the server-span and log-ids middlewares and the worker's
tracer provider.

All are installed by the app factory only when `tracing.wanted` says so; OpenTelemetry
itself (`gateway.otel`) is imported by `tracing_ctx` alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.keys import SETTINGS, TRACING
from gateway.settings import SettingsError
from gateway.tracing import Handler, wanted


def server_spans() -> Middleware:
    """The outermost middleware when tracing is on: one server span per request, around
    the front door, so refusals and errors are traced with their status too."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        tracing = request.app.get(TRACING)
        if tracing is None:
            return await handler(request)
        return await tracing.serve(request, handler)

    return traced


def span_ids_in_logs() -> Middleware:
    """The middleware right inside the front door when tracing is on: the front door
    starts each request's log context afresh, so the server span's ids are bound here,
    after it, for every log line the request writes from then on (its access line too)."""

    @web.middleware
    async def logged(request: web.Request, handler: Handler) -> web.StreamResponse:
        tracing = request.app.get(TRACING)
        if tracing is not None:
            structlog.contextvars.bind_contextvars(**tracing.log_ids())
        return await handler(request)

    return logged


async def tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """The tracer provider of this worker process (made here, after gunicorn forks, never
    in the master), its spans flushed and exporter shut down when the worker stops."""
    settings = app[SETTINGS]
    if not wanted(settings):
        yield
        return
    try:
        from gateway import otel
    except ImportError as exc:
        raise SettingsError(
            "tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_ENABLED) but "
            f"OpenTelemetry is not installed ({exc.name}): pip install 'aio-mcp-gateway[otel]'"
        ) from None
    tracing = otel.OtelTracing.start(settings)
    app[TRACING] = tracing
    yield
    await tracing.close()
