"""Limits on what a client sends: each is refused with the documented status and JSON-RPC
error, and the gateway goes on serving afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.keys import DISPATCHER, HUB
from gateway.settings import SettingsError, load_settings
from tests.conftest import GatewayFactory, make_token, rpc
from tests.plugins import faulty
from tests.transports.conftest import (
    ACCEPT_BOTH,
    EventReader,
    eventually,
    init_message,
    open_session,
    session_headers,
    streams_attached,
)


def nested(depth: int) -> bytes:
    """A ping whose params hold arrays nested so the whole body is `depth` deep."""
    inner = b"[" * (depth - 2) + b"]" * (depth - 2)
    return b'{"jsonrpc":"2.0","id":7,"method":"ping","params":{"deep":' + inner + b"}}"


async def test_rpc_refuses_json_nested_past_max_json_depth_and_serves_on(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_json_depth=16)
    headers = {**user_headers, "Content-Type": "application/json"}
    for depth in (17, 1000, 5000):
        response = await client.post("/rpc", data=nested(depth), headers=headers)
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"] == -32600
        assert "MAX_JSON_DEPTH (16)" in error["message"]
    response = await client.post("/rpc", data=nested(16), headers=headers)
    assert response.status == 200
    assert (await response.json())["result"] == {}
    assert (await rpc(client, "ping", headers=user_headers))["result"] == {}


async def test_a_flat_body_with_many_brackets_is_not_too_deep(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_json_depth=4)
    body = await rpc(client, "ping", {"many": [[1], [2]] * 500}, headers=user_headers)
    assert body["result"] == {}


async def test_mcp_refuses_json_nested_past_max_json_depth_and_serves_on(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty])
    headers = {**user_headers, "Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    response = await client.post("/mcp", data=nested(1000), headers=headers)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == -32600
    assert "MAX_JSON_DEPTH (64)" in error["message"]
    response = await client.post("/mcp", json=init_message(), headers=headers)
    assert response.status == 200


async def test_legacy_message_says_too_deep_on_the_stream_and_serves_on(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty])
    opened = await client.get("/sse", headers={**user_headers, "Accept": "text/event-stream"})
    reader = EventReader(opened)
    endpoint = (await reader.next()).data
    await streams_attached(client, 1)
    headers = {**user_headers, "Content-Type": "application/json"}
    response = await client.post(endpoint, data=nested(1000), headers=headers)
    assert response.status == 202
    error = (await reader.message())["error"]
    assert error["code"] == -32600
    assert "MAX_JSON_DEPTH" in error["message"]
    response = await client.post(endpoint, json=init_message("2024-11-05"), headers=headers)
    assert response.status == 202
    assert (await reader.message())["result"]["protocolVersion"] == "2024-11-05"


def pings(count: int) -> list[dict[str, object]]:
    return [{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in range(count)]


def check_cut_short(answers: list[dict[str, Any]], count: int) -> None:
    """Every request answered in order; the first ones ran, the rest were not run once the
    answers passed the limit."""
    assert [a["id"] for a in answers] == list(range(count))
    ran = [a for a in answers if "result" in a]
    skipped = [a for a in answers if "error" in a]
    assert ran and skipped
    assert answers[: len(ran)] == ran
    assert all(a["error"]["code"] == -32600 for a in skipped)
    assert "MAX_RESPONSE_BYTES (1024 bytes)" in skipped[0]["error"]["message"]


async def test_mcp_batch_longer_than_max_batch_is_refused_with_413(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_batch=10)
    session = await open_session(client, "2025-03-26", headers=user_headers)
    headers = {**user_headers, **session_headers(session)}
    response = await client.post("/mcp", json=pings(11), headers=headers)
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == -32600
    assert "MAX_BATCH (10)" in error["message"]
    response = await client.post("/mcp", json=pings(10), headers=headers)
    assert response.status == 200
    assert len(await response.json()) == 10


async def test_mcp_batch_stops_running_requests_past_max_response_bytes(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_response_bytes=1024)
    session = await open_session(client, "2025-03-26", headers=user_headers)
    headers = {**user_headers, **session_headers(session)}
    response = await client.post("/mcp", json=pings(60), headers=headers)
    assert response.status == 200
    check_cut_short(await response.json(), 60)
    response = await client.post("/mcp", json=pings(1)[0], headers=headers)
    assert (await response.json())["result"] == {}


async def test_legacy_batch_limits_are_said_on_the_stream(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_batch=80, max_response_bytes=1024)
    opened = await client.get("/sse", headers={**user_headers, "Accept": "text/event-stream"})
    reader = EventReader(opened)
    endpoint = (await reader.next()).data
    await streams_attached(client, 1)
    response = await client.post(endpoint, json=pings(81), headers=user_headers)
    assert response.status == 202
    error = (await reader.message())["error"]
    assert error["code"] == -32600
    assert "MAX_BATCH (80)" in error["message"]
    response = await client.post(endpoint, json=pings(60), headers=user_headers)
    assert response.status == 202
    check_cut_short([await reader.message() for _ in range(60)], 60)
    response = await client.post(endpoint, json=pings(1)[0], headers=user_headers)
    assert (await reader.message())["result"] == {}


def oversized_init(field: str, version: str = "2025-06-18") -> dict[str, Any]:
    message = init_message(version)
    message["params"][field] = {"name": "x" * 20_000, "version": "1"}
    return message


@pytest.mark.parametrize("field", ["clientInfo", "capabilities"])
async def test_mcp_initialize_with_oversized_client_fields_opens_no_session(
    gateway: GatewayFactory, user_headers: dict[str, str], field: str
) -> None:
    client = await gateway(plugins=[faulty])
    headers = {**user_headers, "Accept": ACCEPT_BOTH}
    response = await client.post("/mcp", json=oversized_init(field), headers=headers)
    assert response.status == 400
    assert "Mcp-Session-Id" not in response.headers
    error = (await response.json())["error"]
    assert error["code"] == -32602
    assert f"'{field}' is larger than MAX_INITIALIZE_BYTES (16384 bytes)" in error["message"]
    assert await open_session(client, headers=user_headers)


async def test_legacy_initialize_with_oversized_capabilities_is_refused_on_the_stream(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_initialize_bytes=1024)
    opened = await client.get("/sse", headers={**user_headers, "Accept": "text/event-stream"})
    reader = EventReader(opened)
    endpoint = (await reader.next()).data
    await streams_attached(client, 1)
    await client.post(
        endpoint, json=oversized_init("capabilities", "2024-11-05"), headers=user_headers
    )
    error = (await reader.message())["error"]
    assert error["code"] == -32602
    assert "MAX_INITIALIZE_BYTES (1024 bytes)" in error["message"]
    await client.post(endpoint, json=init_message("2024-11-05"), headers=user_headers)
    assert (await reader.message())["result"]["protocolVersion"] == "2024-11-05"


async def test_sessions_past_max_sessions_per_subject_are_refused_with_429(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_sessions_per_subject=3)
    held = [await open_session(client, headers=user_headers) for _ in range(3)]
    headers = {**user_headers, "Accept": ACCEPT_BOTH}
    response = await client.post("/mcp", json=init_message(), headers=headers)
    assert response.status == 429
    error = (await response.json())["error"]
    assert error["code"] == -32029
    assert "MAX_SESSIONS_PER_SUBJECT (3)" in error["message"]
    response = await client.get("/sse", headers={**user_headers, "Accept": "text/event-stream"})
    assert response.status == 429
    assert "MAX_SESSIONS_PER_SUBJECT (3)" in (await response.json())["error"]["message"]
    other = {"Authorization": f"Bearer {make_token('someone-else')}"}
    assert await open_session(client, headers=other)
    ended = await client.delete("/mcp", headers={**user_headers, **session_headers(held[0])})
    assert ended.status in (200, 204)
    assert await open_session(client, headers=user_headers)


async def test_max_sessions_per_subject_holds_across_gateways_sharing_a_cache(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    first = await gateway(plugins=[faulty], cache_type="database", max_sessions_per_subject=3)
    second = await gateway(plugins=[faulty], cache_type="database", max_sessions_per_subject=3)
    for client in (first, second, first):
        assert await open_session(client, headers=user_headers)
    headers = {**user_headers, "Accept": ACCEPT_BOTH}
    response = await second.post("/mcp", json=init_message(), headers=headers)
    assert response.status == 429


async def test_a_second_get_stream_past_max_streams_per_session_is_refused_with_429(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_streams_per_session=1)
    session = await open_session(client, headers=user_headers)
    headers = {**user_headers, **session_headers(session, accept="text/event-stream")}
    first = await client.get("/mcp", headers=headers)
    assert first.status == 200
    await streams_attached(client, 1)
    second = await client.get("/mcp", headers=headers)
    assert second.status == 429
    error = (await second.json())["error"]
    assert error["code"] == -32029
    assert "MAX_STREAMS_PER_SESSION (1)" in error["message"]
    first.close()
    await eventually(lambda: client.app[HUB].stream_count() == 0, what="the stream closed")
    again = await client.get("/mcp", headers=headers)
    assert again.status == 200
    again.close()


async def test_sse_streams_past_max_streams_per_subject_are_refused_with_429(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_streams_per_subject=2)
    headers = {**user_headers, "Accept": "text/event-stream"}
    opened = [await client.get("/sse", headers=headers) for _ in range(2)]
    assert [r.status for r in opened] == [200, 200]
    await streams_attached(client, 2)
    refused = await client.get("/sse", headers=headers)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == -32029
    assert "MAX_STREAMS_PER_SUBJECT (2)" in error["message"]
    other = {"Authorization": f"Bearer {make_token('someone-else')}", "Accept": "text/event-stream"}
    elsewhere = await client.get("/sse", headers=other)
    assert elsewhere.status == 200
    opened[0].close()
    await eventually(lambda: client.app[HUB].stream_count() == 2, what="one stream closed")
    again = await client.get("/sse", headers=headers)
    assert again.status == 200
    for response in (opened[1], elsewhere, again):
        response.close()


HANG = {"name": "faulty_hang", "arguments": {}}


async def test_requests_past_max_inflight_per_subject_get_429_on_rpc(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_inflight_per_subject=2, tool_timeout=30.0)
    hanging = [
        asyncio.create_task(rpc(client, "tools/call", HANG, headers=user_headers)) for _ in range(2)
    ]
    inflight = client.app[DISPATCHER].inflight
    await eventually(lambda: sum(inflight.callers.values()) == 2, what="two calls running")
    response = await client.post(
        "/rpc", json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=user_headers
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    error = (await response.json())["error"]
    assert error["code"] == -32029
    assert "MAX_INFLIGHT_PER_SUBJECT (2)" in error["message"]
    other = {"Authorization": f"Bearer {make_token('someone-else')}"}
    assert (await rpc(client, "ping", headers=other))["result"] == {}
    for task in hanging:
        task.cancel()
    await asyncio.gather(*hanging, return_exceptions=True)
    await eventually(lambda: not inflight.callers, what="the calls ended")
    assert (await rpc(client, "ping", headers=user_headers))["result"] == {}


async def test_requests_past_max_inflight_per_session_are_refused_with_32029(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], max_inflight_per_session=1, tool_timeout=30.0)
    session = await open_session(client, "2025-06-18", headers=user_headers)
    headers = {**user_headers, **session_headers(session, accept="application/json")}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": HANG}
    hanging = asyncio.create_task(client.post("/mcp", json=call, headers=headers))
    inflight = client.app[DISPATCHER].inflight
    await eventually(lambda: bool(inflight.sessions), what="the call running")
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers
    )
    error = (await response.json())["error"]
    assert error["code"] == -32029
    assert "MAX_INFLIGHT_PER_SESSION (1)" in error["message"]
    hanging.cancel()
    await asyncio.gather(hanging, return_exceptions=True)
    await eventually(lambda: not inflight.sessions, what="the call ended")
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=headers
    )
    assert (await response.json())["result"] == {}


async def test_rate_limit_counts_initialize_and_notifications(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], rate_limit_per_minute=2)
    # initialize, then notifications/initialized: the two messages the minute allows.
    session = await open_session(client, headers=user_headers)
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
        headers={**user_headers, **session_headers(session)},
    )
    assert (await response.json())["error"]["code"] == -32029
    other = {"Authorization": f"Bearer {make_token('someone-else')}"}
    assert (await rpc(client, "ping", headers=other))["result"] == {}


async def test_rate_limit_counts_opening_an_sse_stream(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[faulty], rate_limit_per_minute=1)
    headers = {**user_headers, "Accept": "text/event-stream"}
    opened = await client.get("/sse", headers=headers)
    assert opened.status == 200
    refused = await client.get("/sse", headers=headers)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == -32029
    opened.close()


def test_max_json_depth_is_bounded_where_answers_can_still_be_encoded() -> None:
    assert load_settings({"MAX_JSON_DEPTH": "200"}, env_file=None).max_json_depth == 200
    for bad in ("1", "201"):
        with pytest.raises(SettingsError, match="MAX_JSON_DEPTH"):
            load_settings({"MAX_JSON_DEPTH": bad}, env_file=None)


async def test_streams_of_many_callers_past_max_streams_are_refused_with_429(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(plugins=[faulty], max_streams=2)
    callers = [
        {"Authorization": f"Bearer {make_token(f'caller-{n}')}", "Accept": "text/event-stream"}
        for n in range(3)
    ]
    opened = [await client.get("/sse", headers=headers) for headers in callers[:2]]
    assert [r.status for r in opened] == [200, 200]
    await streams_attached(client, 2)
    refused = await client.get("/sse", headers=callers[2])
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == -32029
    assert "MAX_STREAMS (2)" in error["message"] and "of all callers" in error["message"]
    opened[0].close()
    await eventually(lambda: client.app[HUB].stream_count() == 1, what="one stream closed")
    again = await client.get("/sse", headers=callers[2])
    assert again.status == 200
    for response in (opened[1], again):
        response.close()


async def test_requests_of_many_callers_past_max_inflight_get_429_on_rpc(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(plugins=[faulty], max_inflight=2, tool_timeout=30.0)
    tokens = [{"Authorization": f"Bearer {make_token(f'caller-{n}')}"} for n in range(3)]
    hanging = [
        asyncio.create_task(rpc(client, "tools/call", HANG, headers=headers))
        for headers in tokens[:2]
    ]
    inflight = client.app[DISPATCHER].inflight
    await eventually(lambda: inflight.running == 2, what="two calls running")
    response = await client.post(
        "/rpc", json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=tokens[2]
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    error = (await response.json())["error"]
    assert error["code"] == -32029
    assert "MAX_INFLIGHT (2)" in error["message"]
    for task in hanging:
        task.cancel()
    await asyncio.gather(*hanging, return_exceptions=True)
    await eventually(lambda: inflight.running == 0, what="the calls ended")
    assert (await rpc(client, "ping", headers=tokens[2]))["result"] == {}
