"""Protocol 2026-07-28 at `/mcp`: stateless POSTs with the `_meta` envelope, the routing
headers that must agree with the body, `server/discover`, the 2026 result fields, and
`subscriptions/listen` streams."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from aiohttp import ClientResponse
from multidict import CIMultiDict

from gateway.keys import HUB, REGISTRY
from gateway.settings import Settings
from tests.conftest import Client
from tests.plugins import rich
from tests.plugins.rich import CHANGELOG, MISSING_ITEM, README, RichBackend
from tests.transports.conftest import (
    ACCEPT_BOTH,
    JSON,
    EventReader,
    backend_of,
    eventually,
    parse_events,
    served_like_gunicorn,
    streams_attached,
)

MODERN = "2026-07-28"
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_KEY = "io.modelcontextprotocol/subscriptionId"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def envelope(version: str = MODERN, **extra: Any) -> JSON:
    return {
        VERSION_KEY: version,
        CAPABILITIES_KEY: {},
        "io.modelcontextprotocol/clientInfo": {"name": "test-client", "version": "1.0"},
        **extra,
    }


def headers_for(
    method: str, params: JSON, version: str = MODERN, accept: str = ACCEPT_BOTH
) -> dict[str, str]:
    """The headers a conforming client derives from the body."""
    headers = {"Accept": accept, "MCP-Protocol-Version": version, "Mcp-Method": method}
    field = NAMED.get(method)
    if field is not None and isinstance(params.get(field), str):
        headers["Mcp-Name"] = params[field]
    return headers


async def post(
    client: Client,
    method: str,
    params: JSON | None = None,
    *,
    request_id: Any = 1,
    meta: JSON | None = None,
    accept: str = ACCEPT_BOTH,
    headers: dict[str, str | None] | None = None,
) -> ClientResponse:
    """POST one 2026-07-28 request; `headers` overrides the derived ones (None drops one)."""
    body_params: JSON = {**(params or {}), "_meta": envelope() if meta is None else meta}
    derived: dict[str, str | None] = {**headers_for(method, body_params, accept=accept)}
    derived.update(headers or {})
    sent = {k: v for k, v in derived.items() if v is not None}
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": body_params}
    return await client.post("/mcp", json=message, headers=sent)


async def result_of(client: Client, method: str, params: JSON | None = None, **kw: Any) -> JSON:
    response = await post(client, method, params, **kw)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    body: JSON = await response.json()
    result: JSON = body["result"]
    return result


async def error_of(response: ClientResponse, status: int, code: int) -> JSON:
    assert response.status == status, await response.text()
    body: JSON = await response.json()
    assert body["error"]["code"] == code, body
    return body


# --- server/discover --------------------------------------------------------------------------


async def test_server_discover_describes_the_gateway(client: Client) -> None:
    response = await post(client, "server/discover")
    assert response.status == 200
    assert "Mcp-Session-Id" not in response.headers
    body = await response.json()
    assert body["id"] == 1
    result = body["result"]
    assert MODERN in result["supportedVersions"]
    assert "2025-11-25" in result["supportedVersions"]
    assert result["resultType"] == "complete"
    assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0
    assert result["cacheScope"] in {"public", "private"}
    assert result["_meta"][SERVER_INFO_KEY]["name"] == "aio-mcp-gateway"
    assert result["_meta"][SERVER_INFO_KEY]["version"]
    assert {"tools", "resources", "prompts"} <= set(result["capabilities"])


async def test_missing_meta_returns_400_32602(client: Client) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}},
        headers=headers_for("server/discover", {}),
    )
    await error_of(response, 400, -32602)


async def test_meta_without_client_capabilities_returns_400_32602(client: Client) -> None:
    meta = {VERSION_KEY: MODERN}
    body = await error_of(await post(client, "server/discover", meta=meta), 400, -32602)
    assert CAPABILITIES_KEY in body["error"]["message"]


# --- routing headers --------------------------------------------------------------------------


async def test_missing_mcp_method_header_returns_400_32020(client: Client) -> None:
    response = await post(client, "tools/list", headers={"Mcp-Method": None})
    await error_of(response, 400, -32020)


async def test_mismatched_mcp_method_header_returns_400_32020(client: Client) -> None:
    response = await post(client, "tools/list", headers={"Mcp-Method": "prompts/list"})
    await error_of(response, 400, -32020)


async def test_missing_protocol_version_header_returns_400_32020(client: Client) -> None:
    response = await post(client, "tools/list", headers={"MCP-Protocol-Version": None})
    await error_of(response, 400, -32020)


async def test_protocol_version_header_differing_from_meta_returns_400_32020(
    client: Client,
) -> None:
    response = await post(client, "tools/list", meta=envelope("2025-11-25"))
    await error_of(response, 400, -32020)


async def test_missing_mcp_name_header_returns_400_32020(client: Client) -> None:
    response = await post(
        client, "tools/call", {"name": "rich_echo", "arguments": {}}, headers={"Mcp-Name": None}
    )
    await error_of(response, 400, -32020)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "rich_echo", "arguments": {}}),
        ("prompts/get", {"name": "rich_greet"}),
        ("resources/read", {"uri": README}),
    ],
)
async def test_mismatched_mcp_name_header_returns_400_32020(
    client: Client, method: str, params: JSON
) -> None:
    response = await post(client, method, params, headers={"Mcp-Name": "something-else"})
    await error_of(response, 400, -32020)


async def test_duplicated_routing_header_returns_400_32020(client: Client) -> None:
    params = {"_meta": envelope()}
    headers = CIMultiDict(headers_for("tools/list", params))
    headers.add("Mcp-Method", "tools/list")
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params},
        headers=headers,
    )
    await error_of(response, 400, -32020)


async def test_base64_sentinel_mcp_name_is_decoded(client: Client) -> None:
    encoded = "=?base64?" + base64.b64encode(b"rich_echo").decode() + "?="
    result = await result_of(
        client,
        "tools/call",
        {"name": "rich_echo", "arguments": {"text": "decoded"}},
        headers={"Mcp-Name": encoded},
    )
    assert result["content"][0]["text"] == "decoded"


async def test_base64_sentinel_carries_a_non_ascii_resource_uri(client: Client) -> None:
    uri = "rich://items/café"
    encoded = "=?base64?" + base64.b64encode(uri.encode()).decode() + "?="
    result = await result_of(client, "resources/read", {"uri": uri}, headers={"Mcp-Name": encoded})
    assert result["contents"][0]["text"] == "item café"


async def test_malformed_base64_sentinel_never_matches(client: Client) -> None:
    response = await post(
        client,
        "tools/call",
        {"name": "rich_echo", "arguments": {}},
        headers={"Mcp-Name": "=?base64?not base64!?="},
    )
    await error_of(response, 400, -32020)


async def test_mcp_param_header_must_mirror_a_marked_argument(client: Client) -> None:
    params = {"name": "rich_region", "arguments": {"region": "eu"}}
    result = await result_of(client, "tools/call", params, headers={"Mcp-Param-Region": "eu"})
    assert result["content"][0]["text"] == "region eu"
    missing = await post(client, "tools/call", params)
    await error_of(missing, 400, -32020)
    wrong = await post(client, "tools/call", params, headers={"Mcp-Param-Region": "us"})
    await error_of(wrong, 400, -32020)
    absent_argument = await post(
        client,
        "tools/call",
        {"name": "rich_region", "arguments": {}},
        headers={"Mcp-Param-Region": "eu"},
    )
    await error_of(absent_argument, 400, -32020)


async def test_unsupported_version_in_meta_and_header_returns_400_32022(client: Client) -> None:
    response = await post(
        client,
        "server/discover",
        meta=envelope("2099-01-01"),
        headers={"MCP-Protocol-Version": "2099-01-01"},
    )
    body = await error_of(response, 400, -32022)
    assert body["error"]["data"]["requested"] == "2099-01-01"
    assert MODERN in body["error"]["data"]["supported"]


async def test_unsupported_version_header_is_refused_with_400(client: Client) -> None:
    response = await post(
        client,
        "server/discover",
        meta=envelope("2099-01-01"),
        headers={"MCP-Protocol-Version": "2099-01-01"},
    )
    assert response.status == 400


# --- methods and the transport ----------------------------------------------------------------


async def test_unknown_method_returns_404_32601(client: Client) -> None:
    body = await error_of(await post(client, "no/such/method"), 404, -32601)
    assert body["id"] == 1


@pytest.mark.parametrize(
    "method", ["ping", "initialize", "logging/setLevel", "resources/subscribe"]
)
async def test_methods_removed_in_2026_return_404_32601(client: Client, method: str) -> None:
    await error_of(await post(client, method), 404, -32601)


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
async def test_get_and_delete_with_the_modern_header_return_405(client: Client, verb: str) -> None:
    response = await client.request(
        verb, "/mcp", headers={"MCP-Protocol-Version": MODERN, "Accept": ACCEPT_BOTH}
    )
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_notification_returns_202_with_no_body(client: Client) -> None:
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 1, "_meta": envelope()},
        },
        headers={
            "Accept": ACCEPT_BOTH,
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "notifications/cancelled",
        },
    )
    assert response.status == 202
    assert await response.read() == b""


async def test_batch_returns_400_32600(client: Client) -> None:
    params = {"_meta": envelope()}
    response = await client.post(
        "/mcp",
        json=[{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}],
        headers=headers_for("tools/list", params),
    )
    body = await error_of(response, 400, -32600)
    assert body["id"] is None


async def test_posted_response_returns_400_32600(client: Client) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "result": {}},
        headers={"Accept": ACCEPT_BOTH, "MCP-Protocol-Version": MODERN},
    )
    await error_of(response, 400, -32600)


async def test_malformed_json_returns_400_32700(client: Client) -> None:
    response = await client.post(
        "/mcp",
        data=b"{not json",
        headers={**headers_for("tools/list", {}), "Content-Type": "application/json"},
    )
    await error_of(response, 400, -32700)


async def test_accept_without_json_returns_406_with_a_json_error(client: Client) -> None:
    response = await post(client, "tools/list", accept="text/event-stream")
    body = await error_of(response, 406, -32600)
    assert "Not Acceptable" in body["error"]["message"]


async def test_a_session_header_is_ignored_and_none_is_minted(client: Client) -> None:
    response = await post(client, "tools/list", headers={"Mcp-Session-Id": "stale-session"})
    assert response.status == 200
    assert "Mcp-Session-Id" not in response.headers


# --- results ----------------------------------------------------------------------------------


async def test_tools_call_result_has_result_type_complete(client: Client) -> None:
    result = await result_of(
        client, "tools/call", {"name": "rich_echo", "arguments": {"text": "hi"}}
    )
    assert result["resultType"] == "complete"
    assert result["content"] == [{"type": "text", "text": "hi"}]
    assert result["isError"] is False
    assert result["_meta"][SERVER_INFO_KEY]["name"] == "aio-mcp-gateway"


async def test_tools_call_of_an_unknown_tool_returns_400_32602(client: Client) -> None:
    response = await post(client, "tools/call", {"name": "nope", "arguments": {}})
    await error_of(response, 400, -32602)


async def test_tools_call_with_bad_arguments_is_an_error_result(client: Client) -> None:
    arguments = {"text": 5}
    result = await result_of(client, "tools/call", {"name": "rich_echo", "arguments": arguments})
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("Invalid arguments for rich_echo: ")


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ("tools/list", "tools"),
        ("prompts/list", "prompts"),
        ("resources/list", "resources"),
        ("resources/templates/list", "resourceTemplates"),
    ],
)
async def test_list_results_carry_cache_hints(client: Client, method: str, key: str) -> None:
    result = await result_of(client, method)
    assert result[key]
    assert result["resultType"] == "complete"
    assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0
    assert result["cacheScope"] in {"public", "private"}


async def test_resources_read_carries_cache_hints(client: Client) -> None:
    result = await result_of(client, "resources/read", {"uri": README})
    assert result["contents"][0]["text"] == f"contents of {README}"
    assert result["resultType"] == "complete"
    assert "ttlMs" in result and "cacheScope" in result


async def test_resources_read_of_an_unknown_uri_returns_400_32602(client: Client) -> None:
    response = await post(client, "resources/read", {"uri": "rich://nowhere"})
    body = await error_of(response, 400, -32602)
    assert body["error"]["data"] == {"uri": "rich://nowhere"}


async def test_resource_the_upstream_does_not_know_returns_400_32602(client: Client) -> None:
    response = await post(client, "resources/read", {"uri": MISSING_ITEM})
    await error_of(response, 400, -32602)


async def test_prompts_get_has_result_type(client: Client) -> None:
    result = await result_of(
        client, "prompts/get", {"name": "rich_greet", "arguments": {"who": "Ada"}}
    )
    assert result["resultType"] == "complete"
    assert result["messages"][0]["content"]["text"] == "Hello, Ada!"
    assert "ttlMs" not in result


async def test_completion_complete_has_result_type(client: Client) -> None:
    result = await result_of(
        client,
        "completion/complete",
        {
            "ref": {"type": "ref/prompt", "name": "rich_greet"},
            "argument": {"name": "who", "value": "A"},
        },
    )
    assert result["resultType"] == "complete"
    assert result["completion"]["values"] == ["A-for-rich_greet"]


# --- progress and logs on a request's own stream ----------------------------------------------


async def _stream_messages(response: ClientResponse) -> list[JSON]:
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    events = parse_events(await response.text())
    assert all(event.id is None for event in events)
    return [event.message for event in events]


async def test_tools_call_without_progress_token_or_log_level_answers_json(
    client: Client,
) -> None:
    response = await post(client, "tools/call", {"name": "rich_progress", "arguments": {}})
    assert response.content_type == "application/json"
    assert (await response.json())["result"]["content"][0]["text"] == "done"


async def test_tools_call_with_a_progress_token_streams_progress_then_the_result(
    client: Client,
) -> None:
    response = await post(
        client,
        "tools/call",
        {"name": "rich_progress", "arguments": {}},
        request_id=3,
        meta=envelope(progressToken=5),
    )
    messages = await _stream_messages(response)
    progress = [m["params"] for m in messages if m.get("method") == "notifications/progress"]
    assert [(p["progressToken"], p["progress"]) for p in progress] == [(5, 1), (5, 2)]
    assert not [m for m in messages if m.get("method") == "notifications/message"]
    assert messages[-1]["id"] == 3
    assert messages[-1]["result"]["resultType"] == "complete"
    assert messages[-1]["result"]["content"][0]["text"] == "done"


async def test_tools_call_with_a_progress_token_but_json_accept_answers_json(
    client: Client,
) -> None:
    response = await post(
        client,
        "tools/call",
        {"name": "rich_progress", "arguments": {}},
        meta=envelope(progressToken=5),
        accept="application/json",
    )
    assert response.content_type == "application/json"


async def test_log_messages_are_sent_only_at_or_above_the_requested_level(
    client: Client,
) -> None:
    response = await post(
        client,
        "tools/call",
        {"name": "rich_progress", "arguments": {}},
        meta=envelope(**{LOG_LEVEL_KEY: "info"}),
    )
    messages = await _stream_messages(response)
    logged = [m["params"] for m in messages if m.get("method") == "notifications/message"]
    assert [(entry["level"], entry["data"]) for entry in logged] == [
        ("info", "info line"),
        ("error", "error line"),
    ]
    assert not [m for m in messages if m.get("method") == "notifications/progress"]
    assert messages[-1]["result"]["resultType"] == "complete"


async def test_closing_the_response_stream_cancels_the_call(client: Client) -> None:
    backend = backend_of(client)
    response = await post(
        client,
        "tools/call",
        {"name": "rich_slow", "arguments": {}},
        meta=envelope(progressToken="slow"),
    )
    assert response.content_type == "text/event-stream"
    await asyncio.wait_for(backend.slow_started.wait(), 5)
    response.close()
    await eventually(lambda: backend.cancelled == ["rich_slow"], what="the upstream call ended")


async def test_closing_the_response_stream_cancels_the_call_when_served_like_gunicorn(
    base_settings: Settings, user_headers: dict[str, str]
) -> None:
    settings = base_settings.replace(tool_timeout=20.0)
    async with served_like_gunicorn(settings, [rich], user_headers) as served:
        backend = served.app[REGISTRY].backends["rich"]
        assert isinstance(backend, RichBackend)
        params = {"name": "rich_slow", "arguments": {}, "_meta": envelope(progressToken="slow")}
        response = await served.http.post(
            f"{served.base}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
            headers=headers_for("tools/call", params),
        )
        assert response.content_type == "text/event-stream"
        await asyncio.wait_for(backend.slow_started.wait(), 5)
        response.close()
        await eventually(
            lambda: backend.cancelled == ["rich_slow"], timeout=1.0, what="the call was cancelled"
        )


# --- subscriptions/listen ---------------------------------------------------------------------


async def listen(client: Client, notifications: JSON, request_id: Any = "listen-1") -> EventReader:
    response = await post(
        client, "subscriptions/listen", {"notifications": notifications}, request_id=request_id
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    return EventReader(response)


async def test_listen_without_event_stream_accept_returns_406_with_a_json_error(
    client: Client,
) -> None:
    response = await post(
        client,
        "subscriptions/listen",
        {"notifications": {"toolsListChanged": True}},
        accept="application/json",
    )
    body = await error_of(response, 406, -32600)
    assert "text/event-stream" in body["error"]["message"]


async def test_listen_first_acknowledges_the_honoured_flags_under_the_request_id(
    client: Client,
) -> None:
    reader = await listen(
        client,
        {"toolsListChanged": True, "promptsListChanged": False, "somethingElse": True},
    )
    event = await reader.next()
    assert event.id is None
    assert event.message == {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {SUBSCRIPTION_KEY: "listen-1"},
        },
    }


@pytest.mark.parametrize("request_id", [7, "7", "listen-9"])
async def test_listen_subscription_id_keeps_the_request_ids_type(
    client: Client, request_id: Any
) -> None:
    reader = await listen(client, {"toolsListChanged": True}, request_id=request_id)
    ack = await reader.message()
    assert ack["params"]["_meta"][SUBSCRIPTION_KEY] == request_id
    assert type(ack["params"]["_meta"][SUBSCRIPTION_KEY]) is type(request_id)


async def test_catalogue_change_reaches_the_listen_stream_with_the_subscription_id(
    client: Client, admin_headers: dict[str, str]
) -> None:
    reader = await listen(client, {"toolsListChanged": True}, request_id=11)
    await reader.message()
    await streams_attached(client, 1)
    await client.patch("/prompts/rich_summary", json={"enabled": False}, headers=admin_headers)
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    assert await reader.message() == {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {"_meta": {SUBSCRIPTION_KEY: 11}},
    }


async def test_listen_delivers_each_kind_only_when_asked(
    client: Client, admin_headers: dict[str, str]
) -> None:
    prompts = await listen(client, {"promptsListChanged": True}, request_id="p")
    everything = await listen(
        client,
        {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True},
        request_id="all",
    )
    await prompts.message()
    await everything.message()
    await streams_attached(client, 2)
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    await client.patch(
        "/resources", params={"uri": CHANGELOG}, json={"enabled": False}, headers=admin_headers
    )
    await client.patch("/prompts/rich_summary", json={"enabled": False}, headers=admin_headers)
    assert [(await everything.message())["method"] for _ in range(3)] == [
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/prompts/list_changed",
    ]
    assert (await prompts.message())["method"] == "notifications/prompts/list_changed"


async def test_listen_resource_subscriptions_relay_updates_of_those_uris(
    client: Client,
) -> None:
    backend = backend_of(client)
    reader = await listen(client, {"resourceSubscriptions": [README, "rich://items"]})
    ack = await reader.message()
    assert ack["params"]["notifications"] == {"resourceSubscriptions": [README, "rich://items"]}
    await streams_attached(client, 1)
    assert ("resources/subscribe", {"uri": README}) in backend.requests
    await backend.announce("notifications/resources/updated", {"uri": CHANGELOG})
    await backend.announce("notifications/resources/updated", {"uri": README})
    await backend.announce("notifications/resources/updated", {"uri": "rich://items/5"})
    updates = [await reader.message() for _ in range(2)]
    assert [u["params"] for u in updates] == [
        {"uri": README, "_meta": {SUBSCRIPTION_KEY: "listen-1"}},
        {"uri": "rich://items/5", "_meta": {SUBSCRIPTION_KEY: "listen-1"}},
    ]
    assert all(u["method"] == "notifications/resources/updated" for u in updates)


async def test_closing_a_listen_stream_detaches_it(client: Client) -> None:
    reader = await listen(client, {"toolsListChanged": True})
    await reader.message()
    await streams_attached(client, 1)
    reader.response.close()
    hub = client.app[HUB]
    await eventually(lambda: hub.stream_count() == 0, what="the listen stream detached")
