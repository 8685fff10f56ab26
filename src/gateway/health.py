"""Probes: `/health` (liveness), `/ready` (store and cache answer) and `/version`.

All answer without a token; `/ready` says what fails only to a caller with a valid token,
since its errors can name internal hosts and addresses."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from gateway import __version__, heap
from gateway.access import identified, is_identified, public
from gateway.eventloop import running_loop_name
from gateway.keys import CACHE, LEADER, REGISTRY, SETTINGS, STORE

_CHECK_TIMEOUT = 2.0


@public
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@identified
async def ready(request: web.Request) -> web.Response:
    app = request.app
    checks = {"store": app[STORE].ping(), "cache": app[CACHE].health()}
    failing: dict[str, str] = {}
    for part, check in checks.items():
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                await check
        except Exception as exc:
            failing[part] = str(exc) or type(exc).__name__
    if failing and not is_identified(request):
        return web.json_response({"status": "unavailable"}, status=503)
    if failing:
        names = ", ".join(sorted(failing))
        return web.json_response(
            {"status": "unavailable", "message": f"not ready: {names}", "failing": failing},
            status=503,
        )
    return web.json_response({"status": "ready"})


@public
async def version(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    catalogue = request.app[REGISTRY].catalogue
    return web.json_response(
        {
            "name": "aio-mcp-gateway",
            "version": __version__,
            "cache": settings.cache_type,
            "store": "postgresql" if settings.is_postgres else "sqlite",
            "worker": os.getpid(),
            "event_loop": running_loop_name(),
            "gc": heap.state(),
            "leader": request.app[LEADER].is_leader,
            "catalogue": {"version": catalogue.version, "tools": len(catalogue.tools)},
        }
    )


def install(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/version", version)
