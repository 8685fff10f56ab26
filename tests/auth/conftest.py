"""Fixtures of the OAuth resource-server tests: a real authorization server
(`tests.support.oidc`), in-process gateways with `AUTH_TYPE=oauth` at a known URL, and a
small MCP upstream that records the headers it receives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.settings import Settings
from tests.conftest import Client, free_port
from tests.support import oidc
from tests.support.oidc import AuthorizationServer

authorization_server = oidc.authorization_server
oidc_provider_modules = oidc.oidc_provider_modules

OAuthGateway = Callable[..., Awaitable[Client]]


def oauth_settings(issuer: str, **plugin_values: Any) -> dict[str, Any]:
    return {"OAUTH_ISSUER": issuer, "OAUTH_REQUIRED_SCOPES": ("mcp",), **plugin_values}


@pytest.fixture
async def oauth_gateway_of(base_settings: Settings) -> AsyncIterator[OAuthGateway]:
    """Start in-process gateways with AUTH_TYPE=oauth at `PUBLIC_URL` = their own address:
    `await oauth_gateway_of(issuer, OAUTH_LEEWAY=0.0, ...)`, where keywords in capitals are
    the plugin's settings and others the gateway's."""
    from gateway.app import build_app
    from gateway.plugins import Plugins, build_plugin_manager

    clients: list[Client] = []

    async def start(issuer: str, **overrides: Any) -> Client:
        plugin = {k: v for k, v in overrides.items() if k.isupper()}
        core = {k: v for k, v in overrides.items() if not k.isupper()}
        port = free_port()
        settings = base_settings.replace(
            **{
                "auth_type": "oauth",
                "public_url": f"http://127.0.0.1:{port}",
                "plugin_values": oauth_settings(issuer, **plugin),
                **core,
            }
        )
        app = build_app(settings, Plugins(build_plugin_manager(settings.plugins_blocked)))
        client: Client = TestClient(TestServer(app, host="127.0.0.1", port=port))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        await client.close()


@pytest.fixture
def oauth_gateway(
    oauth_gateway_of: OAuthGateway, authorization_server: AuthorizationServer
) -> OAuthGateway:
    """`oauth_gateway_of` with the real authorization server as the issuer."""

    async def start(**overrides: Any) -> Client:
        return await oauth_gateway_of(authorization_server.issuer, **overrides)

    return start


def base_url(client: Client) -> str:
    return f"http://127.0.0.1:{client.port}"


class RecordingUpstream:
    """An MCP server (Streamable HTTP, JSON answers) with one tool, `echo`, that keeps the
    headers of every request it receives."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/mcp", self.post)

    async def post(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        message = orjson.loads(await request.read())
        if "id" not in message:
            return web.Response(status=202)
        method = message["method"]
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recording", "version": "1"},
            }
        elif method == "tools/list":
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            result = {"tools": [{"name": "echo", "inputSchema": schema}]}
        elif method == "tools/call":
            text = str(message["params"].get("arguments", {}).get("text", ""))
            result = {"content": [{"type": "text", "text": text}]}
        else:
            return _json(
                {
                    "jsonrpc": "2.0",
                    "id": message["id"],
                    "error": {"code": -32601, "message": method},
                }
            )
        return _json({"jsonrpc": "2.0", "id": message["id"], "result": result})


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@pytest.fixture
async def recording_upstream() -> AsyncIterator[tuple[RecordingUpstream, str]]:
    """The upstream and its MCP URL."""
    upstream = RecordingUpstream()
    server = TestServer(upstream.app, host="127.0.0.1")
    await server.start_server()
    yield upstream, f"http://127.0.0.1:{server.port}/mcp"
    await server.close()
