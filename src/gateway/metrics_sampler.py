"""Every `SAMPLE_INTERVAL` seconds, this worker's tallies flushed into its metric files, the
series of upstreams the catalogue no longer holds dropped, and the gauges that describe
what it holds (connections, sessions, streams, the catalogue) sampled, rather than kept up
to date on the hot path: a scrape on another worker sees them at most that old. The last
flush is made when the worker stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import metrics
from gateway.keys import HUB, REGISTRY, UPSTREAM_SESSIONS

SAMPLE_INTERVAL = 1.0


def sample(app: web.Application) -> None:
    """Set the gauges from this worker's parts."""
    registry = app[REGISTRY]
    catalogue = registry.catalogue
    metrics.forget_upstreams(catalogue.upstreams)
    metrics.CATALOGUE_TOOLS.set(len(catalogue.tools))
    metrics.CATALOGUE_VERSION.set(max(catalogue.version, 0))
    connections = 0
    for backend in registry.backends.values():
        counted = getattr(backend, "open_connections", None)
        if counted is not None:
            connections += counted()
    metrics.UPSTREAM_CONNECTIONS.set(connections)
    metrics.UPSTREAM_SESSIONS.set(len(app[UPSTREAM_SESSIONS].held))
    hub = app[HUB]
    metrics.CLIENT_STREAMS.set(hub.stream_count())
    metrics.CLIENT_SESSIONS_STREAMING.set(len(hub.streams))


async def _sampling(app: web.Application) -> None:
    while True:
        metrics.flush()
        sample(app)
        await asyncio.sleep(SAMPLE_INTERVAL)


async def sampler_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sampling(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    metrics.flush()
