"""The SSRF guard against real servers: addresses are checked at registration and again at
every connection each backend opens, redirects are never followed (so an upstream's
credentials stay at its origin), and a failed discovery does not repeat the upstream's body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from gateway.contracts import BackendError, UpstreamConfig
from gateway.settings import Settings, SettingsError, load_settings
from tests.backends.conftest import installed_plugins, served, serving_mcp
from tests.conftest import Client, GatewayFactory
from tests.upstreams.processes import RunningUpstream

TRANSPORTS = ["streamable-http", "sse", "streamable-http-2026"]
SECRET = "s3cret-credential"
BODY_SECRET = "internal-detail-9f2c"


class Recorder:
    """An upstream that records every request it gets and answers as it is told."""

    def __init__(self, answer: web.StreamResponse | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.answer = answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        return self.answer or web.Response(status=404)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@asynccontextmanager
async def started(transport: str, url: str, settings: Settings) -> AsyncIterator[Any]:
    spec = installed_plugins().backend_for(transport)
    assert spec is not None
    config = UpstreamConfig("guarded", transport, url, headers={"X-Secret": SECRET})
    backend = spec.factory(config, settings)
    try:
        await backend.start()
        yield backend
    finally:
        await backend.close()


def path_of(transport: str) -> str:
    return "/sse" if transport == "sse" else "/mcp"


# --- settings -------------------------------------------------------------------------------


def test_cidr_settings_are_read_normalised() -> None:
    settings = load_settings(
        {"UPSTREAM_DENY_CIDRS": "10.1.2.3/8, ::1", "UPSTREAM_ALLOW_CIDRS": "10.0.0.7"},
        env_file=None,
    )
    assert settings.upstream_deny_cidrs == ("10.0.0.0/8", "::1/128")
    assert settings.upstream_allow_cidrs == ("10.0.0.7/32",)


def test_a_cidr_setting_that_is_not_a_range_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^UPSTREAM_DENY_CIDRS=.*intranet"):
        load_settings({"UPSTREAM_DENY_CIDRS": "10.0.0.0/8,intranet"}, env_file=None)


# --- registration ---------------------------------------------------------------------------


async def test_registering_the_cloud_metadata_address_returns_422_naming_the_rule(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway()
    payload = {"name": "meta", "url": "http://169.254.169.254/latest/meta-data"}
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 422, await response.text()
    message = (await response.json())["error"]["message"]
    assert "169.254.169.254" in message
    assert "link-local addresses are never upstreams" in message


async def test_registering_an_ipv4_mapped_metadata_address_returns_422(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway()
    payload = {"name": "meta", "url": "http://[::ffff:169.254.169.254]/latest"}
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 422, await response.text()
    assert "link-local" in (await response.json())["error"]["message"]


async def test_registering_a_name_resolving_to_a_denied_range_returns_422_naming_the_setting(
    gateway: GatewayFactory, admin_headers: dict[str, str], own_upstream: RunningUpstream
) -> None:
    client: Client = await gateway(upstream_deny_cidrs=("127.0.0.0/8", "::1/128"))
    url = f"http://localhost:{own_upstream.port}/mcp"
    response = await client.post(
        "/upstreams", json={"name": "own", "url": url}, headers=admin_headers
    )
    assert response.status == 422, await response.text()
    assert "UPSTREAM_DENY_CIDRS" in (await response.json())["error"]["message"]


async def test_an_allowed_exception_to_a_denied_range_registers(
    gateway: GatewayFactory, admin_headers: dict[str, str], own_upstream: RunningUpstream
) -> None:
    client = await gateway(
        upstream_deny_cidrs=("0.0.0.0/0", "::/0"), upstream_allow_cidrs=("127.0.0.1/32",)
    )
    response = await client.post(
        "/upstreams", json={"name": "own", "url": own_upstream.url}, headers=admin_headers
    )
    assert response.status == 201, await response.text()


# --- every connection -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_denied_address_is_refused_at_connect_time_and_nothing_reaches_it(
    transport: str,
) -> None:
    recorder = Recorder()
    settings = Settings(tool_timeout=5.0, upstream_deny_cidrs=("127.0.0.0/8", "::1/128"))
    async with served(recorder.app()) as base:
        url = base.replace("127.0.0.1", "localhost") + path_of(transport)
        with pytest.raises(BackendError, match="UPSTREAM_DENY_CIDRS"):
            async with started(transport, url, settings) as backend:
                await backend.list_tools()
    assert recorder.requests == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_literal_link_local_address_is_refused_at_connect_time(transport: str) -> None:
    url = "http://169.254.169.254/latest" + path_of(transport)
    with pytest.raises(BackendError, match="link-local addresses are never upstreams"):
        async with started(transport, url, Settings(tool_timeout=5.0)) as backend:
            await backend.list_tools()


# --- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_redirect_to_another_port_is_not_followed_and_the_credentials_stay(
    transport: str, gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    elsewhere = Recorder()
    async with AsyncExitStack() as stack:
        target = await stack.enter_async_context(served(elsewhere.app()))
        redirect = web.Response(status=307, headers={"Location": f"{target}/mcp"})
        redirecting = Recorder(redirect)
        base = await stack.enter_async_context(served(redirecting.app()))
        client = await gateway()
        payload = {
            "name": "hop",
            "url": base + path_of(transport),
            "transport": transport,
            "headers": {"X-Secret": SECRET},
        }
        response = await client.post("/upstreams", json=payload, headers=admin_headers)
        assert response.status == 502, await response.text()
        assert "307" in (await response.json())["error"]["message"]
    assert redirecting.requests, "the redirecting upstream was asked"
    assert elsewhere.requests == []


# --- discovery errors -----------------------------------------------------------------------


async def answers_json_rpc_error(request: web.Request) -> web.Response:
    message = await request.json()
    error = {"code": -32000, "message": f"database at 10.0.0.5 says {BODY_SECRET}"}
    return web.json_response({"jsonrpc": "2.0", "id": message.get("id"), "error": error})


async def answers_http_error(request: web.Request) -> web.Response:
    body = {"error": {"message": f"stack trace with {BODY_SECRET}"}}
    return web.json_response(body, status=500)


@pytest.mark.parametrize("handler", [answers_json_rpc_error, answers_http_error])
async def test_a_failed_discovery_says_what_failed_without_the_upstreams_body(
    handler: Any, gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    async with serving_mcp(handler, "POST") as url:
        client = await gateway()
        payload = {"name": "leaky", "url": url}
        response = await client.post("/upstreams", json=payload, headers=admin_headers)
        text = await response.text()
    assert response.status == 502, text
    assert BODY_SECRET not in text
    assert "upstream 'leaky' answered" in text
