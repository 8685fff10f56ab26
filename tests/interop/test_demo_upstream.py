"""The demo upstream (`aio-mcp-gateway demo-upstream`) answers as an MCP server should.

The README's walkthrough runs it behind a real gateway (test_readme.py); these tests pin the
protocol details a client meets directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.demo import DOCS, create_app, search

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def demo() -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(), host="127.0.0.1")) as client:
        yield client


async def ask(client: Client, method: str, params: object = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if params is not None:
        message["params"] = params
    response = await client.post("/mcp", json=message)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    assert body["id"] == 7
    return body


async def test_initialize_agrees_on_the_clients_version_and_offers_three_capabilities(
    demo: Client,
) -> None:
    body = await ask(demo, "initialize", {"protocolVersion": "2025-03-26", "capabilities": {}})
    assert body["result"]["protocolVersion"] == "2025-03-26"
    assert set(body["result"]["capabilities"]) == {"tools", "resources", "prompts"}


async def test_initialize_with_an_unknown_version_offers_the_newest(demo: Client) -> None:
    body = await ask(demo, "initialize", {"protocolVersion": "1999-01-01", "capabilities": {}})
    assert body["result"]["protocolVersion"] == "2025-11-25"


async def test_search_returns_matching_docs_as_structured_content_and_json_text(
    demo: Client,
) -> None:
    body = await ask(demo, "tools/call", {"name": "search", "arguments": {"query": "token"}})
    result = body["result"]
    uris = [hit["uri"] for hit in result["structuredContent"]["results"]]
    assert "docs://tokens" in uris
    assert '"docs://tokens"' in result["content"][0]["text"]


def test_search_needs_every_word_and_ranks_by_mentions() -> None:
    assert search("gateway upstream")[0]["uri"] == "docs://gateway"
    assert search("no-such-word") == []
    assert len(search("the", limit=2)) == 2


@pytest.mark.parametrize(
    "arguments", [{}, {"query": ""}, {"query": "x", "limit": 0}, {"query": "x", "limit": "5"}]
)
async def test_bad_search_arguments_are_a_tool_error(
    demo: Client, arguments: dict[str, object]
) -> None:
    body = await ask(demo, "tools/call", {"name": "search", "arguments": arguments})
    assert body["result"]["isError"] is True


async def test_every_doc_is_a_readable_resource(demo: Client) -> None:
    listed = (await ask(demo, "resources/list"))["result"]["resources"]
    assert [r["uri"] for r in listed] == [doc.uri for doc in DOCS.values()]
    read = await ask(demo, "resources/read", {"uri": "docs://faq"})
    assert read["result"]["contents"][0]["text"] == DOCS["faq"].text


async def test_an_unknown_resource_is_32002(demo: Client) -> None:
    body = await ask(demo, "resources/read", {"uri": "docs://nothing"})
    assert body["error"]["code"] == -32002


async def test_the_triage_prompt_carries_the_question(demo: Client) -> None:
    body = await ask(demo, "prompts/get", {"name": "triage", "arguments": {"question": "Why?"}})
    assert "Why?" in body["result"]["messages"][0]["content"]["text"]
    missing = await ask(demo, "prompts/get", {"name": "triage", "arguments": {}})
    assert missing["error"]["code"] == -32602


async def test_an_unknown_method_is_32601(demo: Client) -> None:
    body = await ask(demo, "sampling/createMessage", {})
    assert body["error"]["code"] == -32601


async def test_a_notification_is_accepted_with_202_and_no_body(demo: Client) -> None:
    response = await demo.post(
        "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert response.status == 202
    assert await response.read() == b""


async def test_a_body_that_is_not_json_is_400_with_32700(demo: Client) -> None:
    response = await demo.post("/mcp", data=b"{nope")
    assert response.status == 400
    assert (await response.json())["error"]["code"] == -32700


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
async def test_no_stream_and_no_session_to_end_is_405(demo: Client, verb: str) -> None:
    response = await demo.request(verb, "/mcp")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
