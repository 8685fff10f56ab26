"""Streamable HTTP at `/mcp` for the handshake-era versions (2024-11-05 to 2025-11-25):
sessions, headers, batches, errors, streams, resumption, progress, cancellation, and the
resource, prompt and completion relays to a full backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.keys import SESSIONS
from gateway.sessions import SessionStore
from tests.conftest import Client, GatewayFactory, make_token
from tests.plugins import faulty, rich
from tests.plugins.rich import CHANGELOG, ITEMS, README, RichBackend
from tests.transports.conftest import (
    ACCEPT_BOTH,
    JSON,
    LATEST,
    backend_of,
    call,
    init_message,
    open_get_stream,
    open_session,
    parse_events,
    session_headers,
    streams_attached,
)

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")


@pytest.fixture
async def session(client: Client) -> str:
    return await open_session(client)


# --- initialize and sessions -------------------------------------------------------------------


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_initialize_issues_a_session_id_and_echoes_a_supported_version(
    client: Client, version: str
) -> None:
    response = await client.post(
        "/mcp", json=init_message(version), headers={"Accept": ACCEPT_BOTH}
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    session = response.headers["Mcp-Session-Id"]
    assert session and all(0x21 <= ord(c) <= 0x7E for c in session)
    body = await response.json()
    assert body["id"] == 1
    result = body["result"]
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "aio-mcp-gateway"
    assert result["serverInfo"]["version"]
    assert {"tools", "resources", "prompts", "logging", "completions"} <= set(
        result["capabilities"]
    )
    assert result["capabilities"]["resources"]["subscribe"] is True


async def test_initialize_with_an_unknown_version_counter_offers_the_latest(
    client: Client,
) -> None:
    response = await client.post("/mcp", json=init_message("1999-01-01"))
    assert (await response.json())["result"]["protocolVersion"] == LATEST


async def test_initialize_with_a_modern_version_counter_offers_the_latest_handshake_version(
    client: Client,
) -> None:
    response = await client.post("/mcp", json=init_message("2026-07-28"))
    assert (await response.json())["result"]["protocolVersion"] == LATEST


async def test_each_initialize_opens_a_different_session(client: Client) -> None:
    assert await open_session(client) != await open_session(client)


async def test_the_session_serves_requests_with_its_negotiated_version(
    client: Client,
) -> None:
    session = await open_session(client, "2025-06-18")
    body = await call(client, session, "ping", headers={"MCP-Protocol-Version": "2025-06-18"})
    assert body == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_notification_is_accepted_with_202_and_no_body(client: Client, session: str) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        headers=session_headers(session),
    )
    assert response.status == 202
    assert await response.read() == b""


async def test_posted_response_to_nothing_asked_is_refused_with_400(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 9, "result": {}}, headers=session_headers(session)
    )
    assert response.status == 400
    body = await response.json()
    assert body["id"] == 9
    assert "no request with id 9" in body["error"]["message"]


async def test_request_without_session_returns_400_when_sessions_are_required(
    gateway: GatewayFactory, user_headers: dict[str, str]
) -> None:
    client = await gateway(plugins=[rich, faulty], mcp_sessions="required")
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": ACCEPT_BOTH, **user_headers},
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == -32600
    assert "Mcp-Session-Id" not in response.headers


async def test_requests_without_session_are_served_by_default(client: Client) -> None:
    listed = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": ACCEPT_BOTH},
    )
    assert listed.status == 200
    assert "Mcp-Session-Id" not in listed.headers
    assert "rich_echo" in {t["name"] for t in (await listed.json())["result"]["tools"]}
    called = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "rich_echo", "arguments": {"text": "hi"}},
        },
        headers={"Accept": ACCEPT_BOTH},
    )
    assert (await called.json())["result"]["content"][0]["text"] == "hi"


async def test_notification_without_session_gets_202(client: Client) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={"Accept": ACCEPT_BOTH},
    )
    assert response.status == 202


@pytest.mark.parametrize(
    ("method", "params"),
    [("logging/setLevel", {"level": "info"}), ("resources/subscribe", {"uri": "rich://a"})],
)
async def test_methods_that_need_a_session_refuse_without_one(
    client: Client, method: str, params: JSON
) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        headers={"Accept": ACCEPT_BOTH},
    )
    body = await response.json()
    assert body["error"]["code"] in {-32600, -32601}
    assert "session" in body["error"]["message"] or "not found" in body["error"]["message"]


async def test_initialize_without_protocol_version_returns_32602(client: Client) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}},
        headers={"Accept": ACCEPT_BOTH},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32602
    assert "Mcp-Session-Id" not in response.headers


async def test_unknown_session_returns_404(client: Client) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers=session_headers("no-such-session"),
    )
    assert response.status == 404
    assert (await response.json())["error"]["code"] == -32600


@pytest.mark.parametrize(
    "local_ttl", [0.01, 30.0], ids=["local-copy-expired", "within-the-local-copys-lifetime"]
)
async def test_expired_session_returns_404(
    gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, local_ttl: float
) -> None:
    # Each worker keeps a copy of a session for LOCAL_TTL; the session's own idle TTL must
    # end it whether or not that copy is still held.
    monkeypatch.setattr(SessionStore, "LOCAL_TTL", local_ttl)
    client = await gateway(plugins=[rich], session_ttl=0.2)
    client.session.headers["Authorization"] = f"Bearer {make_token('user')}"
    session = await open_session(client)
    await asyncio.sleep(0.3)
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=session_headers(session)
    )
    assert response.status == 404


async def test_a_session_in_use_outlives_its_idle_ttl(
    gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SessionStore, "LOCAL_TTL", 0.01)
    client = await gateway(plugins=[rich], session_ttl=1.0)
    client.session.headers["Authorization"] = f"Bearer {make_token('user')}"
    session = await open_session(client)
    statuses = []
    for _ in range(8):
        await asyncio.sleep(0.25)
        response = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers=session_headers(session),
        )
        statuses.append(response.status)
    assert statuses == [200] * 8


async def test_session_of_another_subject_returns_404(client: Client, session: str) -> None:
    other = {"Authorization": f"Bearer {make_token('someone-else')}"}
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={**session_headers(session), **other},
    )
    assert response.status == 404
    stream = await client.get(
        "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": session, **other}
    )
    assert stream.status == 404
    deleted = await client.delete("/mcp", headers={"Mcp-Session-Id": session, **other})
    assert deleted.status == 404
    assert (await call(client, session, "ping"))["result"] == {}


async def test_delete_ends_the_session_and_later_requests_get_404(
    client: Client, session: str
) -> None:
    response = await client.delete("/mcp", headers={"Mcp-Session-Id": session})
    assert response.status in {200, 204}
    again = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=session_headers(session)
    )
    assert again.status == 404
    assert (await client.delete("/mcp", headers={"Mcp-Session-Id": session})).status == 404


async def test_delete_without_session_returns_400(client: Client) -> None:
    assert (await client.delete("/mcp")).status == 400


async def test_delete_closes_the_sessions_get_stream(client: Client, session: str) -> None:
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    await client.delete("/mcp", headers={"Mcp-Session-Id": session})
    with pytest.raises(EOFError):
        await reader.next(timeout=5)


# --- the MCP-Protocol-Version header ---------------------------------------------------------


async def test_unsupported_protocol_version_header_returns_400(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=session_headers(session, "1999-01-01"),
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32600


async def test_protocol_version_header_differing_from_the_session_returns_400(
    client: Client,
) -> None:
    session = await open_session(client, "2025-11-25")
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=session_headers(session, "2025-06-18"),
    )
    assert response.status == 400
    body = await response.json()
    assert "2025-06-18" in body["error"]["message"]


async def test_request_without_protocol_version_header_uses_the_sessions_version(
    client: Client,
) -> None:
    session = await open_session(client, "2025-03-26")
    assert (await call(client, session, "ping"))["result"] == {}


async def test_modern_envelope_without_the_version_header_returns_400_32020(
    client: Client, session: str
) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},
        headers=session_headers(session),
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32020


# --- batches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
async def test_batch_is_rejected_with_32600_after_2025_03_26(client: Client, version: str) -> None:
    session = await open_session(client, version)
    response = await client.post(
        "/mcp",
        json=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
        headers=session_headers(session, version),
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == -32600
    assert body["id"] is None


async def test_batch_is_answered_with_an_array_for_a_2025_03_26_session(client: Client) -> None:
    session = await open_session(client, "2025-03-26")
    response = await client.post(
        "/mcp",
        json=[
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
            {
                "jsonrpc": "2.0",
                "id": "two",
                "method": "tools/call",
                "params": {"name": "rich_echo", "arguments": {"text": "hi"}},
            },
            {"jsonrpc": "2.0", "id": 3, "method": "no/such/method"},
        ],
        headers=session_headers(session, accept="application/json"),
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    answers = await response.json()
    assert isinstance(answers, list)
    by_id = {answer["id"]: answer for answer in answers}
    assert set(by_id) == {1, "two", 3}
    assert by_id[1]["result"] == {}
    assert by_id["two"]["result"]["content"][0]["text"] == "hi"
    assert by_id[3]["error"]["code"] == -32601


async def test_batch_of_notifications_only_returns_202_for_a_2025_03_26_session(
    client: Client,
) -> None:
    session = await open_session(client, "2025-03-26")
    response = await client.post(
        "/mcp",
        json=[
            {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
        ],
        headers=session_headers(session),
    )
    assert response.status == 202
    assert await response.read() == b""


async def test_empty_batch_returns_400_for_a_2025_03_26_session(client: Client) -> None:
    session = await open_session(client, "2025-03-26")
    response = await client.post("/mcp", json=[], headers=session_headers(session))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32600


async def test_initialize_inside_a_batch_returns_400(client: Client) -> None:
    session = await open_session(client, "2025-03-26")
    response = await client.post(
        "/mcp",
        json=[init_message("2025-03-26"), {"jsonrpc": "2.0", "id": 2, "method": "ping"}],
        headers=session_headers(session),
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32600


async def test_initialize_inside_a_batch_without_a_session_returns_400(client: Client) -> None:
    response = await client.post(
        "/mcp", json=[init_message("2025-03-26")], headers={"Accept": ACCEPT_BOTH}
    )
    assert response.status == 400
    assert "Mcp-Session-Id" not in response.headers


# --- malformed requests -----------------------------------------------------------------------


async def test_malformed_json_returns_400_32700(client: Client, session: str) -> None:
    response = await client.post(
        "/mcp",
        data=b'{"jsonrpc": "2.0", "id": 1,',
        headers={**session_headers(session), "Content-Type": "application/json"},
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == -32700
    assert body["id"] is None


async def test_invalid_envelope_returns_400_32600(client: Client, session: str) -> None:
    response = await client.post(
        "/mcp", json={"jsonrpc": "1.0", "id": 1, "method": "ping"}, headers=session_headers(session)
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32600


async def test_wrong_content_type_returns_415(client: Client, session: str) -> None:
    response = await client.post(
        "/mcp",
        data=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
        headers={**session_headers(session), "Content-Type": "text/plain"},
    )
    assert response.status == 415


async def test_accept_without_json_or_event_stream_returns_406(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=session_headers(session, accept="text/html"),
    )
    assert response.status == 406


async def test_oversized_body_returns_413(gateway: GatewayFactory) -> None:
    client = await gateway(plugins=[rich], max_request_bytes=4096)
    client.session.headers["Authorization"] = f"Bearer {make_token('user')}"
    session = await open_session(client)
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "rich_echo", "arguments": {"text": "x" * 10_000}},
        },
        headers=session_headers(session),
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == -32600


async def test_unknown_method_returns_32601(client: Client, session: str) -> None:
    body = await call(client, session, "no/such/method", request_id=5)
    assert body["id"] == 5
    assert body["error"]["code"] == -32601


async def test_server_discover_on_a_handshake_session_returns_32601(
    client: Client, session: str
) -> None:
    body = await call(client, session, "server/discover")
    assert body["error"]["code"] == -32601


async def test_unauthenticated_request_returns_401(client: Client) -> None:
    response = await client.post(
        "/mcp", json=init_message(), headers={"Authorization": "Bearer not-a-token"}
    )
    assert response.status == 401


# --- Origin ---------------------------------------------------------------------------------


async def test_foreign_origin_returns_403(client: Client) -> None:
    response = await client.post(
        "/mcp", json=init_message(), headers={"Origin": "http://evil.example"}
    )
    assert response.status == 403
    assert "Mcp-Session-Id" not in response.headers


async def test_foreign_origin_is_refused_on_get_and_delete_too(
    client: Client, session: str
) -> None:
    headers = {**session_headers(session), "Origin": "http://evil.example"}
    assert (await client.get("/mcp", headers=headers)).status == 403
    assert (await client.delete("/mcp", headers=headers)).status == 403
    assert (await call(client, session, "ping"))["result"] == {}


async def test_an_origin_naming_the_host_is_refused_unless_configured(client: Client) -> None:
    """DNS rebinding: the attacker's page controls both Host and Origin, so matching one
    against the other proves nothing."""
    origin = f"http://{client.host}:{client.port}"
    response = await client.post("/mcp", json=init_message(), headers={"Origin": origin})
    assert response.status == 403


async def test_the_origin_of_public_url_is_allowed(gateway: GatewayFactory) -> None:
    client = await gateway(plugins=[rich], public_url="https://gateway.example/base")
    client.session.headers["Authorization"] = f"Bearer {make_token('user')}"
    response = await client.post(
        "/mcp", json=init_message(), headers={"Origin": "https://gateway.example"}
    )
    assert response.status == 200


async def test_origin_listed_in_allowed_origins_is_allowed(gateway: GatewayFactory) -> None:
    client = await gateway(plugins=[rich], allowed_origins=("https://app.example",))
    client.session.headers["Authorization"] = f"Bearer {make_token('user')}"
    allowed = await client.post(
        "/mcp", json=init_message(), headers={"Origin": "https://app.example"}
    )
    assert allowed.status == 200
    other = await client.post(
        "/mcp", json=init_message(), headers={"Origin": "https://other.example"}
    )
    assert other.status == 403


# --- tools ------------------------------------------------------------------------------------


async def test_tools_list_paginates_with_cursors(
    client: Client, session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.mcp import methods

    everything = await call(client, session, "tools/list")
    assert "nextCursor" not in everything["result"]
    names = [tool["name"] for tool in everything["result"]["tools"]]
    monkeypatch.setattr(methods, "PAGE_SIZE", 3)
    seen: list[str] = []
    params: JSON = {}
    pages = 0
    while True:
        body = await call(client, session, "tools/list", params)
        page = body["result"]["tools"]
        assert len(page) <= 3
        seen += [tool["name"] for tool in page]
        pages += 1
        cursor = body["result"].get("nextCursor")
        if cursor is None:
            break
        assert isinstance(cursor, str)
        params = {"cursor": cursor}
    assert seen == names
    assert pages == -(-len(names) // 3)
    assert {"rich_echo", "rich_progress", "rich_slow", "faulty_count"} <= set(names)


async def test_tools_list_with_an_invalid_cursor_returns_32602(
    client: Client, session: str
) -> None:
    body = await call(client, session, "tools/list", {"cursor": "not a cursor"})
    assert body["error"]["code"] == -32602


async def test_tools_call_answers_json_without_a_progress_token(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "rich_echo", "arguments": {"text": "hello"}},
        },
        headers=session_headers(session, accept=ACCEPT_BOTH),
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.headers["Mcp-Session-Id"] == session
    body = await response.json()
    assert body["id"] == 7
    assert body["result"] == {"content": [{"type": "text", "text": "hello"}], "isError": False}


async def test_tools_call_of_an_unknown_tool_returns_32601(client: Client, session: str) -> None:
    body = await call(client, session, "tools/call", {"name": "nope", "arguments": {}})
    assert body["error"]["code"] == -32601


async def test_tools_call_with_bad_arguments_is_an_error_result_from_2025_11_25(
    client: Client, session: str
) -> None:
    body = await call(
        client, session, "tools/call", {"name": "faulty_count", "arguments": {"n": "x"}}
    )
    result = body["result"]
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("Invalid arguments for faulty_count: ")
    assert "'n'" in result["content"][0]["text"]


@pytest.mark.parametrize("version", ["2025-06-18", "2025-03-26", "2024-11-05"])
async def test_tools_call_with_bad_arguments_returns_32602_before_2025_11_25(
    client: Client, version: str
) -> None:
    session = await open_session(client, version)
    body = await call(
        client,
        session,
        "tools/call",
        {"name": "faulty_count", "arguments": {"n": "x"}},
        headers={"MCP-Protocol-Version": version},
    )
    assert body["error"]["code"] == -32602
    assert "faulty_count" in body["error"]["message"]


async def test_tools_call_with_a_progress_token_streams_progress_before_the_result(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 8,
            "method": "tools/call",
            "params": {
                "name": "rich_progress",
                "arguments": {},
                "_meta": {"progressToken": "client-token"},
            },
        },
        headers=session_headers(session),
    )
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    assert response.headers["Mcp-Session-Id"] == session
    messages = [event.message for event in parse_events(await response.text())]
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert [p["params"]["progress"] for p in progress] == [1, 2]
    assert all(p["params"]["progressToken"] == "client-token" for p in progress)
    assert progress[0]["params"]["message"] == "half"
    assert messages[-1]["id"] == 8
    assert messages[-1]["result"]["content"][0]["text"] == "done"
    assert all("id" not in m for m in messages[:-1])
    upstream_meta = backend_of(client).requests[-1][1]["_meta"]
    assert upstream_meta["progressToken"] != "client-token"


async def test_tools_call_with_a_progress_token_but_json_accept_answers_json(
    client: Client, session: str
) -> None:
    body = await call(
        client,
        session,
        "tools/call",
        {"name": "rich_progress", "arguments": {}, "_meta": {"progressToken": 1}},
    )
    assert body["result"]["content"][0]["text"] == "done"


async def test_log_messages_follow_logging_set_level(client: Client, session: str) -> None:
    async def logged() -> list[str]:
        response = await client.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "rich_progress", "arguments": {}, "_meta": {"progressToken": 2}},
            },
            headers=session_headers(session),
        )
        messages = [event.message for event in parse_events(await response.text())]
        return [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]

    assert await logged() == ["debug line", "info line", "error line"]
    assert await call(client, session, "logging/setLevel", {"level": "warning"}) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {},
    }
    assert await logged() == ["error line"]
    stored = await client.app[SESSIONS].get(session)
    assert stored is not None and stored.log_level == "warning"


async def test_log_messages_reach_a_client_that_set_no_level_and_asked_no_progress(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "rich_progress", "arguments": {}},
        },
        headers=session_headers(session),
    )
    assert response.content_type == "text/event-stream"
    messages = [event.message for event in parse_events(await response.text())]
    logged = [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]
    assert logged == ["debug line", "info line", "error line"]
    assert not [m for m in messages if m.get("method") == "notifications/progress"]
    assert messages[-1]["result"]["content"][0]["text"] == "done"


async def test_a_call_that_relays_nothing_answers_as_plain_json(
    client: Client, session: str
) -> None:
    response = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "rich_echo", "arguments": {"text": "plain"}},
        },
        headers=session_headers(session),
    )
    assert response.content_type == "application/json"
    assert (await response.json())["result"]["content"][0]["text"] == "plain"


async def test_logging_set_level_with_an_unknown_level_returns_32602(
    client: Client, session: str
) -> None:
    body = await call(client, session, "logging/setLevel", {"level": "loud"})
    assert body["error"]["code"] == -32602


async def test_cancelled_notification_ends_a_running_call_early(
    client: Client, session: str
) -> None:
    backend = backend_of(client)
    running = asyncio.create_task(
        client.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 41,
                "method": "tools/call",
                "params": {"name": "rich_slow", "arguments": {}},
            },
            headers=session_headers(session, accept="application/json"),
        )
    )
    await asyncio.wait_for(backend.slow_started.wait(), 5)
    started = time.monotonic()
    cancel = await client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 41, "reason": "the user gave up"},
        },
        headers=session_headers(session),
    )
    assert cancel.status == 202
    response = await asyncio.wait_for(running, 5)
    assert time.monotonic() - started < 5
    body = await response.json()
    assert "result" not in body
    assert body["error"]["code"] == -32800
    assert backend.cancelled == ["rich_slow"]


async def test_cancelled_notification_for_another_id_leaves_the_call_running(
    client: Client, session: str
) -> None:
    backend = backend_of(client)
    running = asyncio.create_task(
        call(client, session, "tools/call", {"name": "rich_slow", "arguments": {}}, request_id=42)
    )
    await asyncio.wait_for(backend.slow_started.wait(), 5)
    await client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "42"}},
        headers=session_headers(session),
    )
    await asyncio.sleep(0.1)
    assert not running.done()
    assert backend.cancelled == []
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


# --- the GET stream ---------------------------------------------------------------------------


async def test_get_with_a_session_opens_an_event_stream(client: Client, session: str) -> None:
    response = await client.get(
        "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": session}
    )
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    assert response.headers["Mcp-Session-Id"] == session
    response.close()


async def test_get_without_a_session_returns_400(client: Client) -> None:
    response = await client.get("/mcp", headers={"Accept": "text/event-stream"})
    assert response.status == 400


async def test_get_with_an_unknown_session_returns_404(client: Client) -> None:
    response = await client.get(
        "/mcp", headers={"Accept": "text/event-stream", "Mcp-Session-Id": "nope"}
    )
    assert response.status == 404


async def test_get_without_event_stream_accept_returns_406(client: Client, session: str) -> None:
    response = await client.get(
        "/mcp", headers={"Accept": "application/json", "Mcp-Session-Id": session}
    )
    assert response.status == 406


async def test_catalogue_change_sends_tools_list_changed_on_the_get_stream(
    client: Client, session: str, admin_headers: dict[str, str]
) -> None:
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    response = await client.patch(
        "/tools/rich_echo", json={"enabled": False}, headers=admin_headers
    )
    assert response.status == 200
    event = await reader.next()
    assert event.name == "message"
    assert event.message == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    listed = await call(client, session, "tools/list")
    assert "rich_echo" not in [tool["name"] for tool in listed["result"]["tools"]]
    disabled = await call(client, session, "tools/call", {"name": "rich_echo", "arguments": {}})
    assert disabled["error"]["code"] == -32601


async def test_prompt_and_resource_changes_send_their_list_changed(
    client: Client, session: str, admin_headers: dict[str, str]
) -> None:
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    await client.patch("/prompts/rich_summary", json={"enabled": False}, headers=admin_headers)
    assert (await reader.message())["method"] == "notifications/prompts/list_changed"
    await client.patch(
        "/resources", params={"uri": CHANGELOG}, json={"enabled": False}, headers=admin_headers
    )
    assert (await reader.message())["method"] == "notifications/resources/list_changed"


async def test_get_stream_events_carry_ids_and_last_event_id_replays_later_events(
    client: Client, session: str, admin_headers: dict[str, str]
) -> None:
    first = await open_get_stream(client, session)
    await streams_attached(client, 1)
    for enabled in (False, True, False):
        await client.patch("/tools/rich_echo", json={"enabled": enabled}, headers=admin_headers)
    events = [await first.next() for _ in range(3)]
    ids = [event.id for event in events]
    assert all(ids) and len(set(ids)) == 3
    first.response.close()
    resumed = await open_get_stream(client, session, last_event_id=events[0].id)
    replayed = [await resumed.next() for _ in range(2)]
    assert [event.id for event in replayed] == ids[1:]
    assert [event.data for event in replayed] == [event.data for event in events[1:]]
    await streams_attached(client, 1)
    await client.patch("/tools/rich_echo", json={"enabled": True}, headers=admin_headers)
    live = await resumed.next()
    assert live.id not in ids
    assert live.message["method"] == "notifications/tools/list_changed"


async def test_last_event_id_replays_only_the_sessions_own_events(
    client: Client, session: str, admin_headers: dict[str, str]
) -> None:
    backend = backend_of(client)
    mine = await open_get_stream(client, session)
    await streams_attached(client, 1)
    await call(client, session, "resources/subscribe", {"uri": README})
    await backend.announce("notifications/resources/updated", {"uri": README})
    assert (await mine.message())["method"] == "notifications/resources/updated"
    other = await open_session(client)
    theirs = await open_get_stream(client, other, last_event_id="0")
    await streams_attached(client, 2)
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    assert (await theirs.message())["method"] == "notifications/tools/list_changed"


async def test_event_ids_stay_unique_after_the_event_log_expires(
    client: Client, session: str, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.mcp import streams

    monkeypatch.setattr(streams, "EVENT_TTL", 0.2)
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    first = await reader.next()
    await asyncio.sleep(0.3)
    await client.patch("/tools/rich_echo", json={"enabled": True}, headers=admin_headers)
    second = await reader.next()
    assert first.id != second.id


# --- resources --------------------------------------------------------------------------------


async def test_resources_list_and_templates_list_show_the_backends_resources(
    client: Client, session: str
) -> None:
    resources = (await call(client, session, "resources/list"))["result"]["resources"]
    assert [r["uri"] for r in resources] == sorted([README, CHANGELOG])
    assert resources[0]["mimeType"] == "text/plain"
    templates = (await call(client, session, "resources/templates/list"))["result"]
    assert templates["resourceTemplates"] == [
        {"uriTemplate": ITEMS, "name": "item", "mimeType": "text/plain"}
    ]


async def test_resources_read_returns_the_owners_contents(client: Client, session: str) -> None:
    body = await call(client, session, "resources/read", {"uri": README})
    assert body["result"]["contents"] == [
        {"uri": README, "mimeType": "text/plain", "text": f"contents of {README}"}
    ]


async def test_resources_read_of_a_uri_matching_a_template_reaches_its_owner(
    client: Client, session: str
) -> None:
    body = await call(client, session, "resources/read", {"uri": "rich://items/42"})
    assert body["result"]["contents"][0]["text"] == "item 42"


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_resources_read_of_an_unknown_uri_returns_32002(client: Client, version: str) -> None:
    session = await open_session(client, version)
    body = await call(client, session, "resources/read", {"uri": "rich://nowhere"})
    assert body["error"]["code"] == -32002
    assert body["error"]["data"] == {"uri": "rich://nowhere"}


async def test_resources_read_of_a_disabled_resource_returns_32002(
    client: Client, session: str, admin_headers: dict[str, str]
) -> None:
    await client.patch(
        "/resources", params={"uri": README}, json={"enabled": False}, headers=admin_headers
    )
    body = await call(client, session, "resources/read", {"uri": README})
    assert body["error"]["code"] == -32002


async def test_resources_subscribe_forwards_and_updates_reach_the_get_stream(
    client: Client, session: str
) -> None:
    backend = backend_of(client)
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    body = await call(client, session, "resources/subscribe", {"uri": README})
    assert body["result"] == {}
    assert ("resources/subscribe", {"uri": README}) in backend.requests
    await backend.announce("notifications/resources/updated", {"uri": CHANGELOG})
    await backend.announce("notifications/resources/updated", {"uri": README})
    assert await reader.message() == {
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": {"uri": README},
    }


async def test_resources_unsubscribe_stops_updates(client: Client, session: str) -> None:
    backend = backend_of(client)
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    for uri in (README, CHANGELOG):
        await call(client, session, "resources/subscribe", {"uri": uri})
    assert (await call(client, session, "resources/unsubscribe", {"uri": README}))["result"] == {}
    await backend.announce("notifications/resources/updated", {"uri": README})
    await backend.announce("notifications/resources/updated", {"uri": CHANGELOG})
    assert (await reader.message())["params"] == {"uri": CHANGELOG}


async def test_resource_updates_reach_only_subscribed_sessions(
    client: Client, session: str
) -> None:
    backend = backend_of(client)
    other = await open_session(client)
    mine = await open_get_stream(client, session)
    theirs = await open_get_stream(client, other)
    await streams_attached(client, 2)
    await call(client, session, "resources/subscribe", {"uri": README})
    await call(client, other, "resources/subscribe", {"uri": CHANGELOG})
    await backend.announce("notifications/resources/updated", {"uri": README})
    await backend.announce("notifications/resources/updated", {"uri": CHANGELOG})
    assert (await mine.message())["params"] == {"uri": README}
    assert (await theirs.message())["params"] == {"uri": CHANGELOG}


async def test_resources_subscribe_to_an_unknown_uri_returns_32002(
    client: Client, session: str
) -> None:
    body = await call(client, session, "resources/subscribe", {"uri": "rich://nowhere"})
    assert body["error"]["code"] == -32002


# --- prompts and completion -------------------------------------------------------------------


async def test_prompts_list_shows_names_descriptions_and_arguments(
    client: Client, session: str
) -> None:
    prompts = (await call(client, session, "prompts/list"))["result"]["prompts"]
    assert prompts == [
        {
            "name": "rich_greet",
            "description": "a greeting",
            "arguments": [{"name": "who", "description": "whom to greet", "required": True}],
        },
        {"name": "rich_summary", "description": "a summary"},
    ]


async def test_prompts_get_returns_the_owners_messages(client: Client, session: str) -> None:
    body = await call(
        client, session, "prompts/get", {"name": "rich_greet", "arguments": {"who": "Ada"}}
    )
    assert body["result"]["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "Hello, Ada!"}}
    ]


async def test_prompts_get_of_an_unknown_prompt_returns_32602(client: Client, session: str) -> None:
    body = await call(client, session, "prompts/get", {"name": "nope"})
    assert body["error"]["code"] == -32602


async def test_prompts_get_of_a_disabled_prompt_returns_32602(
    client: Client, session: str, admin_headers: dict[str, str]
) -> None:
    await client.patch("/prompts/rich_greet", json={"enabled": False}, headers=admin_headers)
    body = await call(client, session, "prompts/get", {"name": "rich_greet"})
    assert body["error"]["code"] == -32602
    names = [p["name"] for p in (await call(client, session, "prompts/list"))["result"]["prompts"]]
    assert names == ["rich_summary"]


@pytest.fixture
async def remote(client: Client, admin_headers: dict[str, str]) -> RichBackend:
    """The rich backend registered again as the upstream `remote`, so under a prefix."""
    response = await client.post(
        "/upstreams",
        json={"name": "remote", "transport": "rich-remote", "url": "http://127.0.0.1:9/mcp"},
        headers=admin_headers,
    )
    assert response.status == 201, await response.text()
    return backend_of(client, "remote")


async def test_prompts_get_forwards_the_upstreams_original_name(
    client: Client, session: str, remote: RichBackend
) -> None:
    body = await call(
        client, session, "prompts/get", {"name": "remote__rich_greet", "arguments": {"who": "Bo"}}
    )
    assert body["result"]["messages"][0]["content"]["text"] == "Hello, Bo!"
    assert remote.requests[-1] == (
        "prompts/get",
        {"name": "rich_greet", "arguments": {"who": "Bo"}},
    )
    assert backend_of(client).requests == []


async def test_completion_is_routed_to_the_owner_with_the_original_prompt_name(
    client: Client, session: str, remote: RichBackend
) -> None:
    body = await call(
        client,
        session,
        "completion/complete",
        {
            "ref": {"type": "ref/prompt", "name": "remote__rich_greet"},
            "argument": {"name": "who", "value": "Ad"},
        },
    )
    assert body["result"]["completion"]["values"] == ["Ad-for-rich_greet"]
    method, params = remote.requests[-1]
    assert method == "completion/complete"
    assert params["ref"] == {"type": "ref/prompt", "name": "rich_greet"}
    assert backend_of(client).requests == []


async def test_completion_for_a_resource_template_reaches_its_owner(
    client: Client, session: str, remote: RichBackend
) -> None:
    body = await call(
        client,
        session,
        "completion/complete",
        {
            "ref": {"type": "ref/resource", "uri": "remote://items/{id}"},
            "argument": {"name": "id", "value": "4"},
        },
    )
    assert body["result"]["completion"]["values"] == ["4-for-None"]
    assert remote.requests[-1][1]["ref"] == {"type": "ref/resource", "uri": "remote://items/{id}"}


async def test_completion_for_an_unknown_prompt_returns_32602(client: Client, session: str) -> None:
    body = await call(
        client,
        session,
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "nope"}, "argument": {"name": "a", "value": ""}},
    )
    assert body["error"]["code"] == -32602
