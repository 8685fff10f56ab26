"""A gateway with our upstream registered as `own` and the test interceptors installed, and
one way to make a call through either `/rpc` or an MCP session on `/mcp`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import Client, GatewayFactory, rpc, unavailable
from tests.plugins.intercepting import Intercepting
from tests.transports.conftest import call, open_session
from tests.upstreams.processes import RunningUpstream

JSON = dict[str, Any]
Start = Callable[..., Awaitable[Client]]
Send = Callable[..., Awaitable[JSON]]


def require_guardrails() -> None:
    """The guardrails package is part of the test install: under CI its absence fails."""
    try:
        import gateway_guardrails  # noqa: F401
    except ImportError as exc:
        unavailable(
            "the gateway-guardrails package (pip install -e plugins/gateway-guardrails)", exc
        )


@pytest.fixture
def intercepting() -> Intercepting:
    return Intercepting()


@pytest.fixture
def start(
    gateway: GatewayFactory,
    intercepting: Intercepting,
    own_upstream: RunningUpstream,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
) -> Start:
    """`await start(interceptors=("a", "b"), **settings)`: a gateway with `own` registered."""

    async def starting(plugins: tuple[object, ...] = (), **overrides: Any) -> Client:
        client = await gateway(plugins=[intercepting, *plugins], **overrides)
        payload = {"name": "own", "url": own_upstream.url, "transport": "streamable-http"}
        response = await client.post("/upstreams", json=payload, headers=admin_headers)
        assert response.status == 201, await response.text()
        client.session.headers.update(user_headers)
        return client

    return starting


@pytest.fixture(params=["rpc", "mcp"])
def send(request: pytest.FixtureRequest) -> Send:
    """`await send(client, method, params, path=...)`: the JSON-RPC response, over `/rpc`
    or in an MCP session on `/mcp` (or a virtual server's endpoint)."""
    transport = request.param

    async def sending(client: Client, method: str, params: JSON, path: str = "/mcp") -> JSON:
        if transport == "rpc" and path == "/mcp":
            return await rpc(client, method, params)
        session = await open_session(client, path=path)
        return await call(client, session, method, params, path=path)

    return sending


def echo(text: str) -> JSON:
    return {"name": "own__echo", "arguments": {"text": text}}
