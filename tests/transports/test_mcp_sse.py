"""The legacy HTTP+SSE transport: `GET /sse` opens the session's stream and names the
endpoint; every message is POSTed there and answered with 202, the answer (or the error)
travelling on the stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse

from gateway.keys import HUB, SESSIONS
from tests.conftest import Client, GatewayFactory, make_token
from tests.plugins import rich
from tests.plugins.rich import CHANGELOG, README
from tests.transports.conftest import (
    JSON,
    EventReader,
    backend_of,
    eventually,
    init_message,
    served_like_gunicorn,
    streams_attached,
)


@dataclass
class SseSession:
    client: Client
    reader: EventReader
    endpoint: str
    held: list[JSON] = field(default_factory=list)
    """Messages read while waiting for another one."""

    @property
    def session_id(self) -> str:
        return parse_qs(urlsplit(self.endpoint).query)["session_id"][0]

    async def post(self, message: Any, headers: dict[str, str] | None = None) -> ClientResponse:
        return await self.client.post(self.endpoint, json=message, headers=headers)

    async def send(self, message: Any) -> None:
        response = await self.post(message)
        assert response.status == 202, await response.text()

    async def next(self) -> JSON:
        if self.held:
            return self.held.pop(0)
        return await self.reader.message()

    async def answer_to(self, request_id: Any) -> tuple[JSON, list[JSON]]:
        """The response with `request_id`, and every other message that came before it."""
        before: list[JSON] = []
        while True:
            message = await self.next()
            if message.get("id") == request_id and "method" not in message:
                return message, before
            before.append(message)

    async def request(self, method: str, params: JSON | None = None, request_id: Any = 1) -> JSON:
        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        answer, before = await self.answer_to(request_id)
        self.held = before + self.held
        return answer


async def open_sse(client: Client, path: str = "/sse") -> SseSession:
    response = await client.get(path, headers={"Accept": "text/event-stream"})
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    reader = EventReader(response)
    first = await reader.next()
    assert first.name == "endpoint"
    return SseSession(client, reader, first.data)


@pytest.fixture
async def sse(client: Client) -> SseSession:
    session = await open_sse(client)
    await streams_attached(client, 1)
    return session


async def test_the_stream_opens_with_the_endpoint_event(client: Client) -> None:
    session = await open_sse(client)
    assert session.endpoint.startswith("/message?session_id=")
    assert session.session_id
    stored = await client.app[SESSIONS].get(session.session_id)
    assert stored is not None and stored.subject == "user"


async def test_post_is_accepted_with_202_and_the_answer_arrives_on_the_stream(
    sse: SseSession,
) -> None:
    response = await sse.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status == 202
    assert await sse.next() == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_post_without_session_id_returns_400(client: Client) -> None:
    response = await client.post("/message", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status == 400


async def test_post_with_an_unknown_session_id_returns_404(client: Client) -> None:
    response = await client.post(
        "/message?session_id=nope", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
    )
    assert response.status == 404


async def test_post_to_another_subjects_session_returns_404(sse: SseSession) -> None:
    other = {"Authorization": f"Bearer {make_token('someone-else')}"}
    response = await sse.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=other)
    assert response.status == 404


async def test_malformed_json_is_accepted_and_reported_as_32700_on_the_stream(
    client: Client, sse: SseSession
) -> None:
    response = await client.post(
        sse.endpoint, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 202
    message = await sse.next()
    assert message["id"] is None
    assert message["error"]["code"] == -32700


async def test_invalid_request_is_reported_as_32600_on_the_stream(sse: SseSession) -> None:
    await sse.send({"jsonrpc": "1.0", "id": 4, "method": "ping"})
    message = await sse.next()
    assert message["id"] == 4
    assert message["error"]["code"] == -32600


async def test_server_discover_is_answered_32601_on_the_stream(sse: SseSession) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    answer = await sse.request("server/discover", {"_meta": meta})
    assert answer["error"]["code"] == -32601


@pytest.mark.parametrize(
    ("requested", "negotiated"),
    [
        ("2024-11-05", "2024-11-05"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ],
)
async def test_initialize_negotiates_the_protocol_version(
    client: Client, sse: SseSession, requested: str, negotiated: str
) -> None:
    await sse.send(init_message(requested))
    answer = await sse.next()
    assert answer["result"]["protocolVersion"] == negotiated
    assert answer["result"]["serverInfo"]["name"] == "aio-mcp-gateway"
    await sse.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    stored = await client.app[SESSIONS].get(sse.session_id)
    assert stored is not None and stored.protocol_version == negotiated


async def test_tools_list_and_call_are_answered_on_the_stream(sse: SseSession) -> None:
    await sse.request("initialize", init_message()["params"])
    listed = await sse.request("tools/list", request_id=2)
    assert "rich_echo" in [tool["name"] for tool in listed["result"]["tools"]]
    called = await sse.request(
        "tools/call", {"name": "rich_echo", "arguments": {"text": "over sse"}}, request_id=3
    )
    assert called["result"]["content"][0]["text"] == "over sse"


async def test_responses_posted_by_the_client_get_no_answer(sse: SseSession) -> None:
    await sse.send({"jsonrpc": "2.0", "id": "server-1", "result": {}})
    assert (await sse.request("ping", request_id=2))["id"] == 2
    assert sse.held == []


async def test_progress_notifications_arrive_on_the_stream_before_the_result(
    sse: SseSession,
) -> None:
    await sse.send(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "rich_progress", "arguments": {}, "_meta": {"progressToken": 3}},
        }
    )
    answer, before = await sse.answer_to(3)
    progress = [m["params"] for m in before if m["method"] == "notifications/progress"]
    assert [(p["progressToken"], p["progress"]) for p in progress] == [(3, 1), (3, 2)]
    assert answer["result"]["content"][0]["text"] == "done"


async def test_log_messages_on_the_stream_follow_logging_set_level(sse: SseSession) -> None:
    assert (await sse.request("logging/setLevel", {"level": "error"}))["result"] == {}
    await sse.send(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "rich_progress", "arguments": {}},
        }
    )
    _, before = await sse.answer_to(2)
    assert [m["params"]["data"] for m in before if m["method"] == "notifications/message"] == [
        "error line"
    ]


async def test_cancelled_notification_stops_the_call_and_it_gets_no_answer(
    client: Client, sse: SseSession
) -> None:
    backend = backend_of(client)
    await sse.send(
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "rich_slow", "arguments": {}},
        }
    )
    await asyncio.wait_for(backend.slow_started.wait(), 5)
    await sse.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}
    )
    await eventually(lambda: backend.cancelled == ["rich_slow"], what="the call was cancelled")
    await sse.send({"jsonrpc": "2.0", "id": 6, "method": "ping"})
    answer, before = await sse.answer_to(6)
    assert answer["result"] == {}
    assert before == [], "the cancelled request must get no response"


async def test_catalogue_changes_reach_the_stream(
    client: Client, sse: SseSession, admin_headers: dict[str, str]
) -> None:
    await client.patch("/tools/rich_echo", json={"enabled": False}, headers=admin_headers)
    assert await sse.next() == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


async def test_resource_updates_reach_the_stream_after_subscribe(
    client: Client, sse: SseSession
) -> None:
    backend = backend_of(client)
    assert (await sse.request("resources/subscribe", {"uri": README}))["result"] == {}
    await backend.announce("notifications/resources/updated", {"uri": CHANGELOG})
    await backend.announce("notifications/resources/updated", {"uri": README})
    assert await sse.next() == {
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": {"uri": README},
    }


async def test_oversized_body_is_accepted_and_reported_on_the_stream(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(plugins=[rich], max_request_bytes=4096)
    client.session.headers["Authorization"] = f"Bearer {make_token('user')}"
    sse = await open_sse(client)
    await streams_attached(client, 1)
    await sse.send({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y" * 10_000}})
    assert (await sse.next())["error"]["code"] == -32600


async def test_foreign_origin_is_refused_with_403(client: Client) -> None:
    response = await client.get(
        "/sse", headers={"Accept": "text/event-stream", "Origin": "http://evil.example"}
    )
    assert response.status == 403


async def test_closing_the_stream_ends_the_session(client: Client, sse: SseSession) -> None:
    sse.reader.response.close()
    hub = client.app[HUB]
    await eventually(lambda: hub.stream_count() == 0, what="the stream detached")
    response = await sse.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status == 404


async def test_closing_the_stream_ends_the_session_when_served_like_gunicorn(
    base_settings: Any, user_headers: dict[str, str]
) -> None:
    async with served_like_gunicorn(base_settings, [rich], user_headers) as served:
        response = await served.http.get(f"{served.base}/sse")
        endpoint = (await EventReader(response).next()).data
        hub = served.app[HUB]
        await eventually(lambda: hub.stream_count() == 1, what="the stream attached")
        response.close()

        async def ended() -> bool:
            late = await served.http.post(
                f"{served.base}{endpoint}", json={"jsonrpc": "2.0", "method": "notifications/x"}
            )
            return late.status == 404

        await eventually(ended, timeout=2.0, what="the session ended with its stream")
