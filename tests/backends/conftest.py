"""What the backend tests share: one way to build and start a built-in backend, found by its
transport exactly as the gateway finds it, one way to serve a deliberately odd upstream
from inside the test process, and the Swagger Petstore's OpenAPI document from npm."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.contracts import UpstreamConfig
from gateway.plugins import Plugins
from gateway.settings import Settings
from tests.support.npm import npm_install
from tests.upstreams.openapi.petstore import DOCUMENT_IN_PACKAGE, PACKAGE
from tests.upstreams.processes import RunningUpstream, free_port

UpstreamFactory = Callable[..., RunningUpstream]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BASE_TOOLS = ["echo", "add", "sleep", "fail", "big", "progress", "log"]
"""The tools our upstream server offers without options."""


@functools.cache
def installed_plugins() -> Plugins:
    return Plugins.load(Settings())


@asynccontextmanager
async def backend_for(
    transport: str,
    url: str = "",
    *,
    name: str = "own",
    headers: Mapping[str, str] | None = None,
    tool_timeout: float = 10.0,
) -> AsyncIterator[Any]:
    """The installed backend for `transport`, started on the upstream at `url` under the
    upstream name `name`, and closed afterwards."""
    spec = installed_plugins().backend_for(transport)
    assert spec is not None, f"no installed backend serves the transport {transport!r}"
    config = UpstreamConfig(name=name, transport=transport, url=url, headers=dict(headers or {}))
    backend = spec.factory(config, Settings(tool_timeout=tool_timeout))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving_mcp(handler: Handler, method: str = "*") -> AsyncIterator[str]:
    """`handler` answering the `method` requests to `/mcp` of a server on a free loopback
    port; that endpoint's URL."""
    app = web.Application()
    app.router.add_route(method, "/mcp", handler)
    async with served(app) as base:
        yield f"{base}/mcp"


@pytest.fixture(scope="session")
def petstore_document(request: pytest.FixtureRequest) -> Path:
    """The Swagger Petstore's OpenAPI 3.0 document (`petstore.json` of the npm package
    `@readme/oas-examples`), installed once into the pytest cache."""
    folder = npm_install(request.config, "oas-examples", [PACKAGE], [DOCUMENT_IN_PACKAGE])
    return folder / DOCUMENT_IN_PACKAGE
