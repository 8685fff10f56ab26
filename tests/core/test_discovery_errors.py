"""Registering an upstream that fails discovery answers 502 saying what failed (the HTTP
status, the content type, "not JSON", the timeout, the refused connection, the JSON-RPC
code) and never what the upstream sent: the URL may reach a service that is not MCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.backends.conftest import Handler, serving_mcp
from tests.conftest import Client, GatewayFactory, free_port

SECRET = "internal-db-password-hunter2"
"""What the service behind the URL says, which no error may repeat."""


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    return await gateway(tool_timeout=1.0)


@pytest.fixture
async def service() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """A service on loopback answering every POST with `handler`; its URL."""
    async with AsyncExitStack() as stack:

        async def start(handler: Handler) -> str:
            return await stack.enter_async_context(serving_mcp(handler))

        yield start


async def discovery_error(client: Client, admin: dict[str, str], url: str, **extra: Any) -> str:
    payload = {"name": "probe", "url": url, **extra}
    response = await client.post("/upstreams", json=payload, headers=admin)
    assert response.status == 502, await response.text()
    message = str((await response.json())["error"]["message"])
    assert SECRET not in message
    assert (await client.get("/upstreams/probe", headers=admin)).status == 404
    return message


def initialize_reply(message: dict[str, Any], **result: Any) -> web.Response:
    base = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "x"}}
    return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {**base, **result}})


async def test_an_html_page_is_reported_by_its_content_type_as_not_json(
    client: Client, admin_headers: dict[str, str], service: Callable[[Handler], Awaitable[str]]
) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"<html>{SECRET}</html>", content_type="text/html")

    message = await discovery_error(client, admin_headers, await service(page))
    assert message == (
        "could not discover the upstream's tools: "
        "upstream 'probe' answered initialize with text/html, not JSON"
    )


async def test_an_http_error_is_reported_by_status_and_standard_phrase_only(
    client: Client, admin_headers: dict[str, str], service: Callable[[Handler], Awaitable[str]]
) -> None:
    async def failing(request: web.Request) -> web.Response:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": SECRET}})
        return web.Response(
            status=500, reason=f"Oops {SECRET}", body=body, content_type="application/json"
        )

    message = await discovery_error(client, admin_headers, await service(failing))
    assert message.endswith(
        "upstream 'probe' answered HTTP 500 Internal Server Error to initialize"
    )


async def test_a_json_rpc_error_is_reported_by_its_code_only(
    client: Client, admin_headers: dict[str, str], service: Callable[[Handler], Awaitable[str]]
) -> None:
    async def refusing(request: web.Request) -> web.Response:
        message = await request.json()
        error = {"code": -32001, "message": SECRET, "data": SECRET}
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "error": error})

    message = await discovery_error(client, admin_headers, await service(refusing))
    assert message.endswith("upstream 'probe' answered with JSON-RPC error -32001")


async def test_a_malformed_error_or_protocol_version_is_reported_without_its_text(
    client: Client, admin_headers: dict[str, str], service: Callable[[Handler], Awaitable[str]]
) -> None:
    async def malformed(request: web.Request) -> web.Response:
        message = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "error": SECRET})

    async def odd_version(request: web.Request) -> web.Response:
        return initialize_reply(await request.json(), protocolVersion=SECRET)

    message = await discovery_error(client, admin_headers, await service(malformed))
    assert message.endswith("upstream 'probe' sent a malformed error for initialize")
    message = await discovery_error(client, admin_headers, await service(odd_version))
    assert message.endswith("upstream 'probe' chose an unsupported protocol version")


async def test_a_legacy_endpoint_on_another_origin_is_reported_without_the_endpoint(
    client: Client, admin_headers: dict[str, str], service: Callable[[Handler], Awaitable[str]]
) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        endpoint = f"http://elsewhere.example/{SECRET}"
        await response.write(f"event: endpoint\ndata: {endpoint}\n\n".encode())
        await asyncio.sleep(5)
        return response

    url = await service(stream)
    message = await discovery_error(client, admin_headers, url, transport="sse")
    assert message.endswith("upstream 'probe' named an endpoint on another origin")


async def test_a_silent_upstream_is_reported_as_timed_out(
    client: Client, admin_headers: dict[str, str], service: Callable[[Handler], Awaitable[str]]
) -> None:
    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(text=SECRET)

    message = await discovery_error(client, admin_headers, await service(silent))
    assert "upstream 'probe' did not answer within 1s (" in message


async def test_a_refused_connection_is_reported_with_the_address(
    client: Client, admin_headers: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    message = await discovery_error(client, admin_headers, url)
    assert f"upstream 'probe' could not be reached at {url}: Connection refused" in message


@pytest.mark.parametrize(
    ("uri", "shown"),
    [("file:///a\x00b", "'file:///a\\x00b'"), ("res://" + "x" * 9000, "'res://xxxx")],
    ids=["nul", "too-long"],
)
async def test_a_resource_uri_no_client_could_send_back_is_422_naming_it(
    client: Client,
    admin_headers: dict[str, str],
    service: Callable[[Handler], Awaitable[str]],
    uri: str,
    shown: str,
) -> None:
    async def lists_it(request: web.Request) -> web.Response:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            return initialize_reply(message, capabilities={"resources": {}})
        listed: dict[str, Any] = {"tools": []}
        if message["method"] == "resources/list":
            listed = {"resources": [{"uri": uri, "name": "odd"}]}
        elif message["method"] == "resources/templates/list":
            listed = {"resourceTemplates": []}
        elif message["method"] == "prompts/list":
            listed = {"prompts": []}
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": listed})

    payload = {"name": "probe", "url": await service(lists_it)}
    response = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert response.status == 422, await response.text()
    message = (await response.json())["error"]["message"]
    assert message.startswith(
        "upstream 'probe' lists resource URIs with control characters or longer than 8192"
    )
    assert shown in message
    assert (await client.get("/upstreams/probe", headers=admin_headers)).status == 404
