"""Open an MCP session on a gateway's Streamable HTTP endpoint as a handshake-era client
does: `initialize`, then `notifications/initialized` in the session it opened.

One helper for an in-process gateway (aiohttp's `TestClient`) and a gateway in processes
of its own (an `aiohttp.ClientSession`, with `path` a full URL unless it has a `base_url`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient

JSON = dict[str, Any]
ACCEPT_BOTH = "application/json, text/event-stream"
LATEST = "2025-11-25"
INITIALIZED: JSON = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def init_message(
    version: str = LATEST, request_id: Any = 1, capabilities: JSON | None = None
) -> JSON:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "test-client", "version": "1.0"},
        },
    }


async def open_session(
    http: ClientSession | TestClient[web.Request, web.Application],
    version: str = LATEST,
    path: str = "/mcp",
    headers: Mapping[str, str] | None = None,
    capabilities: JSON | None = None,
) -> str:
    """initialize, then notifications/initialized; the session id. `headers` go with both
    requests (credentials, an `MCP-Protocol-Version`)."""
    extra = dict(headers or {})
    initialize = init_message(version, capabilities=capabilities)
    sent = {"Accept": ACCEPT_BOTH, **extra}
    async with http.post(path, json=initialize, headers=sent) as response:
        assert response.status == 200, await response.text()
        session = response.headers["Mcp-Session-Id"]
    sent = {"Accept": ACCEPT_BOTH, "Mcp-Session-Id": session, **extra}
    async with http.post(path, json=INITIALIZED, headers=sent) as response:
        assert response.status == 202, await response.text()
    return session
