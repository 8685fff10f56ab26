"""Search mode: a virtual server with `"tool_mode": "search"` lists only `search_tools`,
`describe_tool` and `call_tool`; search ranks the server's own enabled tools (BM25), and
`call_tool` takes the normal call path (argument check, rate limits, results cache)."""

from __future__ import annotations

import pytest

from gateway.keys import REGISTRY
from gateway.toolsearch import META_TOOLS, tokenize
from tests.conftest import Client, GatewayFactory
from tests.plugins import faulty, rich
from tests.plugins.intercepting import Intercepting
from tests.transports.conftest import JSON, call, open_get_stream, open_session, streams_attached
from tests.transports.test_mcp_sse import open_sse

PATH = "/servers/finder/mcp"
MEMBERS = ["rich_echo", "rich_progress", "faulty_count", "faulty_tick", "faulty_error"]


@pytest.fixture
async def finder(client: Client, admin_headers: dict[str, str]) -> str:
    response = await client.post(
        "/servers",
        json={"id": "finder", "tools": MEMBERS, "tool_mode": "search"},
        headers=admin_headers,
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["tool_mode"] == "search"
    return await open_session(client, path=PATH)


async def use(client: Client, session: str, tool: str, arguments: JSON) -> JSON:
    return await call(
        client, session, "tools/call", {"name": tool, "arguments": arguments}, path=PATH
    )


async def found(client: Client, session: str, query: str, limit: int = 10) -> list[str]:
    answer = await use(client, session, "search_tools", {"query": query, "limit": limit})
    return [hit["name"] for hit in answer["result"]["structuredContent"]["tools"]]


async def test_tools_list_shows_exactly_the_three_search_tools(client: Client, finder: str) -> None:
    tools = (await call(client, finder, "tools/list", path=PATH))["result"]["tools"]
    assert [t["name"] for t in tools] == ["search_tools", "describe_tool", "call_tool"]
    assert tools == META_TOOLS


async def test_search_ranks_the_best_match_first(client: Client, finder: str) -> None:
    assert (await found(client, finder, "count numbers up to n"))[0] == "faulty_count"
    assert (await found(client, finder, "echo my text back"))[0] == "rich_echo"
    answer = await use(client, finder, "search_tools", {"query": "progress report"})
    [first, *_] = answer["result"]["structuredContent"]["tools"]
    assert first["name"] == "rich_progress"
    assert first["description"] == "reports progress" and first["score"] > 0


async def test_search_respects_the_limit_and_finds_nothing_for_unrelated_words(
    client: Client, finder: str
) -> None:
    assert len(await found(client, finder, "rich faulty echo count tick", limit=2)) == 2
    assert await found(client, finder, "kubernetes") == []


async def test_only_the_servers_enabled_tools_are_searchable(
    client: Client, admin_headers: dict[str, str], finder: str
) -> None:
    assert "faulty_crash" not in await found(client, finder, "raises inside crash")
    await client.patch("/tools/faulty_count", json={"enabled": False}, headers=admin_headers)
    assert "faulty_count" not in await found(client, finder, "count numbers")
    answer = await use(client, finder, "call_tool", {"name": "faulty_count", "arguments": {}})
    assert answer["result"]["isError"] is True


async def test_search_sees_curated_names_descriptions_and_tags(
    client: Client, admin_headers: dict[str, str], finder: str
) -> None:
    response = await client.patch(
        "/tools/faulty_tick",
        json={"alias": "visit_counter", "description": "How many visits so far", "tags": ["web"]},
        headers=admin_headers,
    )
    assert response.status == 200
    assert (await found(client, finder, "visitCounter"))[0] == "visit_counter"
    assert (await found(client, finder, "web visits"))[0] == "visit_counter"
    answer = await use(client, finder, "call_tool", {"name": "visit_counter", "arguments": {}})
    assert answer["result"]["isError"] is False


async def test_describe_tool_gives_the_full_definition(client: Client, finder: str) -> None:
    answer = await use(client, finder, "describe_tool", {"name": "faulty_count"})
    described = answer["result"]["structuredContent"]
    assert described["name"] == "faulty_count"
    assert described["inputSchema"]["type"] == "object"
    missing = await use(client, finder, "describe_tool", {"name": "faulty_crash"})
    assert missing["result"]["isError"] is True
    assert "faulty_crash" in missing["result"]["content"][0]["text"]


async def test_call_tool_answers_with_the_tools_own_result(client: Client, finder: str) -> None:
    answer = await use(client, finder, "call_tool", {"name": "faulty_count", "arguments": {"n": 3}})
    assert answer["result"]["structuredContent"] == {"n": 3}
    echoed = await use(
        client, finder, "call_tool", {"name": "rich_echo", "arguments": {"text": "a"}}
    )
    assert echoed["result"]["content"][0]["text"] == "a"


async def test_call_tool_goes_through_the_results_cache_and_rate_limits(
    client: Client, admin_headers: dict[str, str], finder: str
) -> None:
    await client.patch("/tools/faulty_tick", json={"cache_ttl": 60}, headers=admin_headers)
    first = await use(client, finder, "call_tool", {"name": "faulty_tick"})
    again = await use(client, finder, "call_tool", {"name": "faulty_tick"})
    assert first["result"]["content"] == again["result"]["content"]
    assert again["result"]["_meta"] == {"aio-mcp-gateway/cache": "hit"}
    await client.patch("/tools/faulty_count", json={"rate_limit": 1}, headers=admin_headers)
    await use(client, finder, "call_tool", {"name": "faulty_count", "arguments": {"n": 1}})
    limited = await use(client, finder, "call_tool", {"name": "faulty_count", "arguments": {}})
    assert limited["error"]["code"] == -32029


async def test_call_tool_runs_the_servers_interceptors(
    gateway: GatewayFactory, admin_headers: dict[str, str], user_headers: dict[str, str]
) -> None:
    intercepting = Intercepting()
    client = await gateway(plugins=[rich, faulty, intercepting], interceptors=("upper",))
    response = await client.post(
        "/servers",
        json={"id": "finder", "tools": MEMBERS, "tool_mode": "search"},
        headers=admin_headers,
    )
    assert response.status == 201, await response.text()
    client.session.headers.update(user_headers)
    session = await open_session(client, path=PATH)
    answer = await use(
        client, session, "call_tool", {"name": "rich_echo", "arguments": {"text": "hi"}}
    )
    assert answer["result"]["content"][0]["text"] == "HI"
    assert [call.name for call in intercepting["upper"].seen] == ["rich_echo"]


async def test_call_tool_checks_the_inner_arguments_against_the_tools_schema(
    client: Client, finder: str
) -> None:
    answer = await use(client, finder, "call_tool", {"name": "rich_echo", "arguments": {"text": 5}})
    # A 2025-11-25 session: the model reads what was wrong and calls again.
    assert answer["result"]["isError"] is True
    assert "Invalid arguments for rich_echo" in answer["result"]["content"][0]["text"]


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("search_tools", {}, "query"),
        ("search_tools", {"query": "  "}, "query"),
        ("search_tools", {"query": "x" * 1001}, "query"),
        ("search_tools", {"query": "count", "limit": 0}, "limit"),
        ("search_tools", {"query": "count", "limit": True}, "limit"),
        ("search_tools", {"query": "count", "sort": "name"}, "sort"),
        ("describe_tool", {}, "name"),
        ("call_tool", {"name": 4}, "name"),
        ("call_tool", {"name": "faulty_count", "arguments": [1]}, "arguments"),
    ],
)
async def test_malformed_search_tool_arguments_are_an_error_result_naming_the_argument(
    client: Client, finder: str, tool: str, arguments: JSON, named: str
) -> None:
    answer = await use(client, finder, tool, arguments)
    assert answer["result"]["isError"] is True
    text = answer["result"]["content"][0]["text"]
    assert text.startswith(f"Invalid arguments for {tool}: ") and named in text


async def test_the_index_is_built_once_per_catalogue_version(
    client: Client, admin_headers: dict[str, str], finder: str
) -> None:
    registry = client.app[REGISTRY]
    view = registry.catalogue.view("finder")
    assert view is not None and view.search is not None
    await found(client, finder, "count")
    built = view.search._bm25
    assert built is not None
    await found(client, finder, "echo")
    assert registry.catalogue.view("finder") is view and view.search._bm25 is built
    await client.patch("/tools/rich_echo", json={"title": "Echo"}, headers=admin_headers)
    fresh = registry.catalogue.view("finder")
    assert fresh is not view and fresh is not None and fresh.search is not None
    await fresh.search.ready()  # the registry started building it when it loaded
    assert fresh.search._bm25 is not None and fresh.search._bm25 is not built
    assert view.search._bm25 is built


async def test_a_search_mode_server_sends_no_list_changed_for_a_curation(
    client: Client, admin_headers: dict[str, str], finder: str
) -> None:
    """Its list (the three search tools) did not change; a list-mode server's did."""
    await client.post("/servers", json={"id": "lister", "tools": MEMBERS}, headers=admin_headers)
    listing = await open_session(client, path="/servers/lister/mcp")
    lister = await open_get_stream(client, listing, path="/servers/lister/mcp")
    searching = await open_get_stream(client, finder, path=PATH)
    await streams_attached(client, 2)
    await client.patch("/tools/rich_echo", json={"title": "Echo"}, headers=admin_headers)
    assert (await lister.message())["method"] == "notifications/tools/list_changed"
    with pytest.raises(TimeoutError):
        await searching.message(timeout=0.5)


async def test_search_mode_works_over_legacy_sse(client: Client, finder: str) -> None:
    sse = await open_sse(client, "/servers/finder/sse")
    await streams_attached(client, 1)
    await sse.request("initialize", {"protocolVersion": "2024-11-05", "capabilities": {}})
    answer = await sse.request(
        "tools/call", {"name": "search_tools", "arguments": {"query": "count"}}, request_id=2
    )
    assert answer["result"]["structuredContent"]["tools"][0]["name"] == "faulty_count"


def test_tokenize_splits_snake_camel_kebab_and_dotted_names() -> None:
    assert tokenize("list_github_issues") == ["list", "github", "issues", "issue"]
    assert tokenize("listGitHubIssues") == [
        "list",
        "git",
        "hub",
        "issues",
        "issue",
        "listgithubissues",
        "listgithubissue",
    ]
    assert tokenize("create-pull-request") == ["create", "pull", "request"]
    assert tokenize("s3.putObject v2") == ["s3", "put", "object", "putobject", "v2"]
    assert tokenize("Sends the emails") == ["sends", "send", "emails", "email"]
