"""Request ids tie a request's log lines and upstream requests together: the id reaches
every HTTP upstream as `X-Request-ID` (set per request, though upstream sessions are
shared), every log line of the request carries it, and `ACCESS_LOG=json` writes one line
per request. The upstream here is a real aiohttp server on loopback that records the
headers of every request it receives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.logconfig import short_hash
from tests.conftest import Client, GatewayFactory, make_token

JSON = dict[str, Any]
WHO_TOOL = {"name": "who", "description": "Say the request id seen.", "inputSchema": {}}
BROKEN_TOOL = {"name": "broken", "description": "Answer HTTP 500.", "inputSchema": {}}
OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "recorder", "version": "1"},
    "paths": {
        "/who": {
            "get": {
                "operationId": "whoami",
                "summary": "Say the request id seen.",
                "responses": {"200": {"description": "the id"}},
            }
        }
    },
}


class Recorder:
    """An MCP (Streamable HTTP) and OpenAPI upstream that keeps every request's headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        """(path, JSON-RPC method or '', X-Request-ID) of every request."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/mcp", self.mcp)
        app.router.add_get("/openapi.json", self.spec)
        app.router.add_get("/who", self.who)
        return app

    async def spec(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, "", request.headers.get("X-Request-ID")))
        return web.json_response(OPENAPI)

    async def who(self, request: web.Request) -> web.Response:
        rid = request.headers.get("X-Request-ID")
        self.seen.append((request.path, "", rid))
        return web.json_response({"seen": rid})

    async def mcp(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        message = await request.json(loads=orjson.loads)
        rid = request.headers.get("X-Request-ID")
        method = str(message.get("method", ""))
        self.seen.append((request.path, method, rid))
        if "id" not in message:
            return web.Response(status=202)
        result: JSON = {}
        if method == "initialize":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recorder", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": [WHO_TOOL, BROKEN_TOOL]}
        elif method == "tools/call":
            if message["params"]["name"] == "broken":
                return web.Response(status=500, text="broken on purpose")
            result = {"content": [{"type": "text", "text": str(rid)}]}
        body = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    upstream = Recorder()
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


async def call_tool(client: Client, name: str, rid: str | None = None) -> JSON:
    headers = {"X-Request-ID": rid} if rid is not None else {}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}}
    response = await client.post("/rpc", json=message, headers=headers)
    assert response.status == 200
    if rid is not None:
        assert response.headers["X-Request-ID"] == rid
    body: JSON = await response.json()
    return body


@contextmanager
def logged() -> Iterator[list[JSON]]:
    """The log events emitted inside, with the request's bound context merged in."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        yield events


def access_lines(events: list[JSON]) -> list[JSON]:
    return [e for e in events if e.get("event") == "request" and "route" in e]


async def registered(
    gateway: GatewayFactory, url: str, admin_headers: dict[str, str], **settings: object
) -> Client:
    client = await gateway(**settings)
    for body in (
        {"name": "rec", "url": f"{url}/mcp", "transport": "streamable-http"},
        {"name": "api", "url": f"{url}/openapi.json", "transport": "openapi"},
    ):
        response = await client.post("/upstreams", json=body, headers=admin_headers)
        assert response.status == 201, await response.text()
    client.session.headers["Authorization"] = f"Bearer {make_token('alice')}"
    return client


async def test_each_request_id_reaches_the_shared_mcp_session_and_the_openapi_upstream(
    gateway: GatewayFactory, recorder: tuple[Recorder, str], admin_headers: dict[str, str]
) -> None:
    upstream, url = recorder
    client = await registered(gateway, url, admin_headers)
    for rid in ("first-call-1", "second-call-2"):
        reply = await call_tool(client, "rec__who", rid)
        assert "result" in reply, reply
        assert reply["result"]["content"][0]["text"] == rid
        openapi = await call_tool(client, "api__whoami", rid)
        assert rid in openapi["result"]["content"][0]["text"]
    calls = [seen for seen in upstream.seen if seen[1] == "tools/call" or seen[0] == "/who"]
    assert [(path, rid) for path, _, rid in calls] == [
        ("/mcp", "first-call-1"),
        ("/who", "first-call-1"),
        ("/mcp", "second-call-2"),
        ("/who", "second-call-2"),
    ]
    # One upstream session served both calls: the id is set per request, not per session.
    methods = [seen[1] for seen in upstream.seen]
    assert "initialize" not in methods[methods.index("tools/call") :]


async def test_a_malformed_request_id_is_replaced_before_it_goes_upstream(
    gateway: GatewayFactory, recorder: tuple[Recorder, str], admin_headers: dict[str, str]
) -> None:
    upstream, url = recorder
    client = await registered(gateway, url, admin_headers)
    for bad in ("x" * 129, "caf\u00e9"):
        response = await client.post(
            "/rpc",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "rec__who"},
            },
            headers={"X-Request-ID": bad.encode("utf-8").decode("latin-1")},
        )
        made = response.headers["X-Request-ID"]
        assert made != bad and len(made) == 32
        reply = await response.json()
        assert reply["result"]["content"][0]["text"] == made
        assert upstream.seen[-1][2] == made


async def test_every_log_line_of_a_tool_call_carries_its_request_id(
    gateway: GatewayFactory,
    recorder: tuple[Recorder, str],
    admin_headers: dict[str, str],
) -> None:
    _, url = recorder
    client = await registered(gateway, url, admin_headers, access_log="json")
    with logged() as events:
        reply = await call_tool(client, "rec__broken", "broken-call-7")
    assert reply["result"]["isError"] is True
    failure = [e for e in events if e.get("event") == "upstream call failed"]
    assert failure and failure[0]["upstream"] == "rec"
    assert all(e.get("request_id") == "broken-call-7" for e in events), events
    access = access_lines(events)
    assert len(access) == 1
    assert access[0]["method"] == "POST"
    assert access[0]["route"] == "/rpc"
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] > 0
    assert access[0]["subject_hash"] == short_hash("alice")


async def test_the_access_log_is_off_by_default_and_names_route_patterns_not_paths(
    gateway: GatewayFactory,
    recorder: tuple[Recorder, str],
    admin_headers: dict[str, str],
) -> None:
    _, url = recorder
    quiet = await registered(gateway, url, admin_headers)
    with logged() as events:
        assert (await quiet.get("/upstreams/rec", headers=admin_headers)).status == 200
    assert access_lines(events) == []
    loud = await gateway(access_log="json")  # the same store: "rec" is registered
    with logged() as events:
        await loud.get("/upstreams/rec", headers=admin_headers)
        await loud.get("/no/such/path/42", headers=admin_headers)
    assert [(line["route"], line["status"]) for line in access_lines(events)] == [
        ("/upstreams/{name}", 200),
        ("unmatched", 404),
    ]
