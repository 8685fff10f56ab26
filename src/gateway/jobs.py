"""The leader's background jobs: upstream health checks and catalogue refresh."""

from __future__ import annotations

import asyncio

import structlog

from gateway.cacheuse import CacheUse
from gateway.contracts import BackendError
from gateway.leader import LeaderElection, record_health
from gateway.metrics import UPSTREAM_UP
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.upstreams import UpstreamService

log = structlog.get_logger(__name__)


async def check_upstreams(registry: Registry, use: CacheUse, settings: Settings) -> None:
    """List each upstream's tools over its live session; record ok or the error."""

    async def check(name: str) -> None:
        backend = registry.backends.get(name)
        if backend is None:
            await record_health(
                use,
                name,
                "no backend plugin serves this transport",
                settings.upstream_health_interval * 3,
            )
            return
        error: str | None = None
        try:
            async with asyncio.timeout(settings.tool_timeout):
                await backend.list_tools()
        except (BackendError, TimeoutError) as exc:
            error = str(exc) or "timed out"
        if error:
            log.warning("upstream unhealthy", upstream=name, error=error)
        UPSTREAM_UP(name).set(0 if error else 1)
        await record_health(use, name, error, settings.upstream_health_interval * 3)

    await asyncio.gather(*(check(name) for name in registry.catalogue.upstreams))


async def refresh_upstreams(registry: Registry, service: UpstreamService) -> None:
    """Re-discover every remote upstream's tools; the store is written only on change."""
    for name, upstream in registry.catalogue.upstreams.items():
        if upstream.builtin:
            continue
        try:
            await service.refresh(name)
        except Exception as exc:
            log.warning("upstream refresh failed", upstream=name, error=str(exc))


def schedule(
    election: LeaderElection,
    registry: Registry,
    service: UpstreamService,
    use: CacheUse,
    settings: Settings,
) -> None:
    election.add_job(
        "upstream-health",
        settings.upstream_health_interval,
        lambda: check_upstreams(registry, use, settings),
    )
    election.add_job(
        "catalogue-refresh",
        settings.upstream_refresh_interval,
        lambda: refresh_upstreams(registry, service),
    )
