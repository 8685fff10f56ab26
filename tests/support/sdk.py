"""The official MCP SDK's `Client`, connected to a gateway over HTTP: the way the interop,
federation and cluster tests reach a gateway as a real MCP client would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gunicorn_process import USER


def http_client_factory(fresh_connections: bool = False) -> Callable[..., httpx2.AsyncClient]:
    """Make the SDK's HTTP clients; with `fresh_connections` no connection is reused, so
    gunicorn may hand every request to any worker."""
    limits = httpx2.Limits(max_keepalive_connections=0) if fresh_connections else httpx2.Limits()

    def make(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or httpx2.Timeout(10.0, read=60.0),
            auth=auth,
            limits=limits,
        )

    return make


@asynccontextmanager
async def sdk_client(
    url: str,
    mode: str,
    *,
    headers: Mapping[str, str] = USER,
    fresh_connections: bool = False,
    **options: Any,
) -> AsyncIterator[Client]:
    """An entered SDK `Client` on `url`: HTTP+SSE when the path ends in `/sse`, Streamable
    HTTP otherwise; `options` go to `Client` (message_handler, read_timeout_seconds...)."""
    make = http_client_factory(fresh_connections)
    if url.endswith("/sse"):
        transport = sse_client(url, headers=dict(headers), httpx_client_factory=make)
        async with Client(transport, mode=mode, **options) as client:
            yield client
        return
    async with make(headers=dict(headers)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, **options) as client:
            yield client
