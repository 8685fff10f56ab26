"""`POST /rpc`: MCP methods, direct invocation, and every error path of the JSON-RPC contract."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Client, GatewayFactory, make_token, rpc
from tests.plugins import faulty

CONVERT = {"source_timezone": "Europe/Berlin", "target_timezone": "Europe/Dublin", "time": "09:00"}


async def test_initialize_negotiates_a_supported_protocol_version(client: Client) -> None:
    body = await rpc(
        client,
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    assert body["result"]["protocolVersion"] == "2025-06-18"
    assert body["result"]["serverInfo"]["name"] == "aio-mcp-gateway"
    assert "tools" in body["result"]["capabilities"]


async def test_initialize_with_unknown_version_offers_the_latest(client: Client) -> None:
    body = await rpc(client, "initialize", {"protocolVersion": "1999-01-01"})
    assert body["result"]["protocolVersion"] == "2025-11-25"


async def test_ping_returns_empty_result(client: Client) -> None:
    assert await rpc(client, "ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_tools_list_includes_plugin_tools_under_their_own_names(client: Client) -> None:
    body = await rpc(client, "tools/list")
    names = [tool["name"] for tool in body["result"]["tools"]]
    assert {"convert_time", "get_system_time", "faulty_count"} <= set(names)
    assert names == sorted(names)
    convert = next(t for t in body["result"]["tools"] if t["name"] == "convert_time")
    assert convert["inputSchema"]["type"] == "object"


async def test_tools_list_paginates_with_cursor(client: Client) -> None:
    from gateway.mcp import methods as rpc_module

    original = rpc_module.PAGE_SIZE
    rpc_module.PAGE_SIZE = 2
    try:
        seen: list[str] = []
        params: dict[str, str] = {}
        for _ in range(10):
            body = await rpc(client, "tools/list", params)
            seen += [t["name"] for t in body["result"]["tools"]]
            cursor = body["result"].get("nextCursor")
            if cursor is None:
                break
            params = {"cursor": cursor}
    finally:
        rpc_module.PAGE_SIZE = original
    everything = await rpc(client, "tools/list")
    assert seen == [t["name"] for t in everything["result"]["tools"]]
    assert len(seen) > 2


async def test_tools_list_with_bad_cursor_returns_32602(client: Client) -> None:
    body = await rpc(client, "tools/list", {"cursor": "not-a-cursor"})
    assert body["error"]["code"] == -32602


async def test_tools_call_returns_call_tool_result(client: Client) -> None:
    body = await rpc(client, "tools/call", {"name": "convert_time", "arguments": CONVERT})
    result = body["result"]
    assert result["isError"] is False
    assert result["content"][0]["type"] == "text"
    assert "structuredContent" in result


async def test_direct_invocation_by_tool_name_matches_tools_call(client: Client) -> None:
    direct = await rpc(client, "convert_time", CONVERT)
    called = await rpc(client, "tools/call", {"name": "convert_time", "arguments": CONVERT})
    assert direct["result"]["structuredContent"] == called["result"]["structuredContent"]
    assert direct["id"] == 1 and direct["jsonrpc"] == "2.0"


JSON_BODY = {"Content-Type": "application/json"}


async def test_malformed_json_returns_32700(client: Client) -> None:
    response = await client.post(
        "/rpc", data=b'{"jsonrpc": "2.0", "id": 1,', headers={"Content-Type": "application/json"}
    )
    body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == -32700
    assert body["id"] is None


@pytest.mark.parametrize(
    "payload",
    [
        b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]',
        b'"ping"',
        b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": 1}',
        b'{"jsonrpc": "2.0", "id": 1, "method": 5}',
        b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1, 2]}',
    ],
    ids=[
        "batch",
        "not-object",
        "wrong-version",
        "no-method",
        "method-not-string",
        "id-object",
        "params-array",
    ],
)
async def test_invalid_request_returns_32600(client: Client, payload: bytes) -> None:
    response = await client.post("/rpc", data=payload, headers=JSON_BODY)
    body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == -32600
    assert body["jsonrpc"] == "2.0"


async def test_invalid_request_echoes_a_readable_id(client: Client) -> None:
    response = await client.post(
        "/rpc", data=b'{"jsonrpc": "1.0", "id": 7, "method": "ping"}', headers=JSON_BODY
    )
    assert (await response.json())["id"] == 7


async def test_unknown_method_returns_32601(client: Client) -> None:
    body = await rpc(client, "no/such/method")
    assert body["error"]["code"] == -32601
    assert "no/such/method" in body["error"]["message"]


async def test_tools_call_with_unknown_tool_returns_32601(client: Client) -> None:
    body = await rpc(client, "tools/call", {"name": "nope", "arguments": {}})
    assert body["error"]["code"] == -32601
    assert "nope" in body["error"]["message"]


async def test_disabled_tool_returns_32601_and_disappears_from_list(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.patch(
        "/tools/convert_time", json={"enabled": False}, headers=admin_headers
    )
    assert response.status == 200
    assert (await response.json())["enabled"] is False
    body = await rpc(client, "convert_time", CONVERT)
    assert body["error"]["code"] == -32601
    assert "disabled" in body["error"]["message"]
    listed = await rpc(client, "tools/list")
    assert "convert_time" not in [t["name"] for t in listed["result"]["tools"]]
    await client.patch("/tools/convert_time", json={"enabled": True}, headers=admin_headers)
    assert (await rpc(client, "convert_time", CONVERT))["result"]["isError"] is False


async def test_arguments_failing_schema_return_32602_naming_the_field(client: Client) -> None:
    body = await rpc(client, "faulty_count", {"n": "three"})
    assert body["error"]["code"] == -32602
    assert "n" in body["error"]["message"] and "integer" in body["error"]["message"]


async def test_missing_required_argument_returns_32602_naming_it(client: Client) -> None:
    body = await rpc(client, "convert_time", {"source_timezone": "UTC", "time": "09:00"})
    assert body["error"]["code"] == -32602
    assert "target_timezone" in body["error"]["message"]


async def test_arguments_of_wrong_type_return_32602(client: Client) -> None:
    body = await rpc(client, "tools/call", {"name": "faulty_count", "arguments": [1]})
    assert body["error"]["code"] == -32602


async def test_failure_inside_the_gateway_returns_32603_without_traceback(client: Client) -> None:
    body = await rpc(client, "faulty_crash", {})
    assert body["error"] == {"code": -32603, "message": "Internal error"}


async def test_upstream_failure_is_an_error_result_naming_the_upstream(client: Client) -> None:
    body = await rpc(client, "faulty_unreachable", {})
    assert body["result"]["isError"] is True
    assert "faulty" in body["result"]["content"][0]["text"]


async def test_upstream_timeout_is_an_error_result_within_tool_timeout(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], tool_timeout=2.0)
    client.session.headers.update(user_headers)
    started = time.monotonic()
    body = await rpc(client, "faulty_hang", {})
    assert time.monotonic() - started < 4
    assert body["result"]["isError"] is True
    assert "faulty" in body["result"]["content"][0]["text"]
    assert "2s" in body["result"]["content"][0]["text"]


async def test_notification_gets_202_and_no_body(client: Client) -> None:
    response = await client.post(
        "/rpc", json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert response.status == 202
    assert await response.read() == b""


async def test_oversized_body_is_refused_with_a_json_rpc_error(
    gateway: GatewayFactory, admin_headers: dict[str, str]
) -> None:
    client = await gateway(max_request_bytes=2048)
    payload = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 5000}}
    response = await client.post("/rpc", json=payload, headers=admin_headers)
    assert response.status == 413
    body = await response.json()
    assert body["error"]["code"] == -32600
    assert "MAX_REQUEST_BYTES" in body["error"]["message"]


async def test_unknown_route_is_json_not_html(client: Client) -> None:
    response = await client.get("/nowhere")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert (await response.json())["error"]["status"] == 404


async def test_wrong_http_method_on_rpc_is_json_405(client: Client) -> None:
    response = await client.get("/rpc")
    assert response.status == 405
    assert response.content_type == "application/json"


async def test_request_id_is_echoed_or_made(client: Client) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = [(await client.get("/health")).headers["X-Request-ID"] for _ in range(2)]
    assert made[0] != made[1]
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in made)


async def test_metrics_count_tool_calls_and_need_the_metrics_scope(client: Client) -> None:
    await rpc(client, "faulty_count", {"n": 1})
    metrics_token = {"Authorization": f"Bearer {make_token('prometheus', ('metrics',))}"}
    response = await client.get("/metrics", headers=metrics_token)
    assert response.status == 200
    text = await response.text()
    assert 'gateway_tool_calls_total{outcome="ok",tool="faulty_count",upstream="faulty"}' in text
    assert 'gateway_tool_call_duration_seconds_count{upstream="faulty"}' in text
    assert (await client.get("/metrics")).status == 403
    client.session.headers.pop("Authorization")
    assert (await client.get("/metrics")).status == 401
