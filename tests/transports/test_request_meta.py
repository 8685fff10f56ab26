"""A client's `_meta` reaches the upstream as it would directly: every key of a request's
`_meta` goes on with `tools/call`, `resources/read`, `prompts/get` and
`completion/complete`, on every transport and era, except `progressToken` (the gateway's
own token replaces it where progress is relayed) and the protocol's own keys, which belong
to the hop between the client and the gateway (`io.modelcontextprotocol/...`, and any
prefix with a label `modelcontextprotocol` or `mcp`). Past interceptors, which see a
call's arguments only, nothing of it goes on but the progress token: a guardrail must not
be slipped by through `_meta`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.mcp.upstream_calls import passed_meta
from tests.backends.conftest import serving_mcp
from tests.conftest import Client, GatewayFactory, rpc
from tests.transports.conftest import call, open_session, parse_events
from tests.transports.test_mcp_modern import envelope, result_of

JSON = dict[str, Any]

VENDOR: JSON = {"vendor.example/request": "r-1", "trace": 7, "nested": {"a": [1, 2]}}
HOP_ONLY: JSON = {
    "progressToken": "client-token",
    "io.modelcontextprotocol/related-task": {"taskId": "t-1"},
    "modelcontextprotocol.io/anything": 1,
    "tools.mcp.com/x": 2,
}


class Recording:
    """An MCP upstream (JSON replies) with one tool, resource and prompt, that keeps the
    params of every request it is sent, by method."""

    def __init__(self) -> None:
        self.params: dict[str, list[JSON]] = {}

    def of(self, method: str) -> list[JSON]:
        return self.params.get(method, [])

    async def handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405)
        message = await request.json()
        method, params = message.get("method"), message.get("params") or {}
        self.params.setdefault(method, []).append(params)
        if "id" not in message:
            return web.Response(status=202)
        results: dict[str, JSON] = {
            "initialize": {
                "protocolVersion": params.get("protocolVersion"),
                "capabilities": {"tools": {}, "resources": {}, "prompts": {}, "completions": {}},
                "serverInfo": {"name": "recording", "version": "1"},
            },
            "tools/list": {"tools": [{"name": "probe", "inputSchema": {"type": "object"}}]},
            "resources/list": {"resources": [{"uri": "memo://probe", "name": "probe"}]},
            "prompts/list": {"prompts": [{"name": "probe"}]},
            "tools/call": {"content": [{"type": "text", "text": "ok"}], "isError": False},
            "resources/read": {"contents": [{"uri": "memo://probe", "text": "ok"}]},
            "prompts/get": {"messages": []},
            "completion/complete": {"completion": {"values": ["ok"]}},
        }
        result = results.get(method, {})
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})


@pytest.fixture
async def recording() -> AsyncIterator[tuple[Recording, str]]:
    upstream = Recording()
    async with serving_mcp(upstream.handle) as url:
        yield upstream, url


async def registered(
    client: Client, admin_headers: dict[str, str], user_headers: dict[str, str], url: str
) -> Client:
    body = {"name": "rec", "url": url, "transport": "streamable-http"}
    created = await client.post("/upstreams", json=body, headers=admin_headers)
    assert created.status == 201, await created.text()
    client.session.headers.update(user_headers)
    return client


@pytest.fixture
async def gw(
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    recording: tuple[Recording, str],
) -> Client:
    return await registered(await gateway(), admin_headers, user_headers, recording[1])


@pytest.fixture
async def guarded(
    gateway: GatewayFactory,
    admin_headers: dict[str, str],
    user_headers: dict[str, str],
    recording: tuple[Recording, str],
) -> Client:
    """The same, with the `pii` interceptor on every call."""
    client = await gateway(interceptors=("pii",))
    return await registered(client, admin_headers, user_headers, recording[1])


REQUESTS: list[tuple[str, JSON]] = [
    ("tools/call", {"name": "rec__probe", "arguments": {}}),
    ("resources/read", {"uri": "memo://probe"}),
    ("prompts/get", {"name": "rec__probe"}),
    (
        "completion/complete",
        {
            "ref": {"type": "ref/prompt", "name": "rec__probe"},
            "argument": {"name": "a", "value": ""},
        },
    ),
]


@pytest.mark.parametrize(("method", "params"), REQUESTS, ids=[m for m, _ in REQUESTS])
async def test_a_clients_meta_reaches_the_upstream_without_the_hops_own_keys(
    gw: Client, recording: tuple[Recording, str], method: str, params: JSON
) -> None:
    upstream, _ = recording
    answer = await rpc(gw, method, {**params, "_meta": {**VENDOR, **HOP_ONLY}})
    assert "result" in answer, answer
    [sent] = upstream.of(method)
    assert sent["_meta"] == VENDOR


@pytest.mark.parametrize(("method", "params"), REQUESTS[:3], ids=[m for m, _ in REQUESTS[:3]])
async def test_past_interceptors_no_more_than_the_progress_token_goes_on(
    guarded: Client, recording: tuple[Recording, str], method: str, params: JSON
) -> None:
    upstream, _ = recording
    answer = await rpc(guarded, method, {**params, "_meta": {**VENDOR, "email": "a@b.example"}})
    assert "result" in answer, answer
    [sent] = upstream.of(method)
    assert "_meta" not in sent


async def test_a_request_without_meta_reaches_the_upstream_without_meta(
    gw: Client, recording: tuple[Recording, str]
) -> None:
    upstream, _ = recording
    await rpc(gw, "tools/call", {"name": "rec__probe", "arguments": {}})
    [sent] = upstream.of("tools/call")
    assert "_meta" not in sent


async def test_a_relayed_call_carries_the_clients_meta_beside_the_gateways_progress_token(
    gw: Client, recording: tuple[Recording, str]
) -> None:
    upstream, _ = recording
    session = await open_session(gw)
    params = {"name": "rec__probe", "arguments": {}, "_meta": {**VENDOR, **HOP_ONLY}}
    message = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": session}
    response = await gw.post("/mcp", json=message, headers=headers)
    assert response.status == 200, await response.text()
    text = await response.text()
    if response.content_type == "text/event-stream":
        [answer] = [e.message for e in parse_events(text) if "id" in e.message]
    else:
        answer = await response.json()
    assert answer["result"]["content"][0]["text"] == "ok"
    [sent] = upstream.of("tools/call")
    token = sent["_meta"].pop("progressToken")
    assert token != "client-token" and str(token).startswith("gw-")
    assert sent["_meta"] == VENDOR
    # A plain session call without progress carries the client's keys alone.
    await call(gw, session, "tools/call", {"name": "rec__probe", "_meta": VENDOR}, request_id=6)
    assert upstream.of("tools/call")[1]["_meta"] == VENDOR


async def test_a_2026_requests_envelope_stays_with_the_gateway_and_its_own_keys_go_on(
    gw: Client, recording: tuple[Recording, str]
) -> None:
    upstream, _ = recording
    result = await result_of(
        gw, "tools/call", {"name": "rec__probe", "arguments": {}}, meta=envelope(**VENDOR)
    )
    assert result["content"][0]["text"] == "ok"
    [sent] = upstream.of("tools/call")
    assert sent["_meta"] == VENDOR


@pytest.mark.parametrize(
    ("key", "passed"),
    [
        ("vendor.example/x", True),
        ("plain", True),
        ("progressToken", False),
        ("io.modelcontextprotocol/related-task", False),
        ("modelcontextprotocol.io/x", False),
        ("api.modelcontextprotocol.org/x", False),
        ("dev.mcp/x", False),
        ("tools.mcp.com/x", False),
        ("mcpx.example/x", True),
        ("example.com/mcp", True),  # a name, not a prefix label
    ],
)
def test_which_meta_keys_go_on(key: str, passed: bool) -> None:
    assert (passed_meta({key: 1}) == {key: 1}) is passed
