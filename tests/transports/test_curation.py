"""Tool curation end to end: `PATCH /tools/{name}` sets an alias, title, description,
annotations and tags; `GET /tools` shows them beside the upstream's values; every transport
lists the curated view and calls the tool by its alias; virtual servers select by tag."""

from __future__ import annotations

import pytest

from gateway.catalogue import Catalogue
from gateway.contracts import ToolDef
from gateway.store import CatalogueData, ToolOverride, ToolRecord
from tests.conftest import Client, GatewayFactory, error_message, rpc
from tests.transports.conftest import (
    JSON,
    call,
    open_get_stream,
    open_session,
    streams_attached,
)
from tests.transports.test_mcp_sse import open_sse
from tests.upstreams.processes import RunningUpstream

CURATION: JSON = {
    "alias": "say_back",
    "title": "Say it back",
    "description": "Answers with exactly the text it was given.",
    "annotations": {"readOnlyHint": True, "idempotentHint": True},
    "tags": ["text", "demo"],
}


@pytest.fixture
async def curated(client: Client, admin_headers: dict[str, str]) -> JSON:
    response = await client.patch("/tools/rich_echo", json=CURATION, headers=admin_headers)
    assert response.status == 200, await response.text()
    body: JSON = await response.json()
    return body


def listed(tools: list[JSON], name: str) -> JSON:
    [tool] = [t for t in tools if t["name"] == name]
    return tool


# --- the admin API -----------------------------------------------------------------------------


async def test_patch_answers_with_the_upstream_values_and_the_curation_side_by_side(
    curated: JSON,
) -> None:
    assert curated["name"] == "rich_echo"
    assert curated["description"] == "echoes its text"
    assert curated["title"] is None
    assert curated["curation"] == CURATION
    assert curated["listed"] == {
        "name": "say_back",
        "title": "Say it back",
        "description": "Answers with exactly the text it was given.",
        "annotations": {"readOnlyHint": True, "idempotentHint": True},
    }


async def test_get_tools_and_get_tool_show_the_curation_and_the_original(
    client: Client, admin_headers: dict[str, str], curated: JSON
) -> None:
    everything = await (await client.get("/tools", headers=admin_headers)).json()
    assert listed(everything["tools"], "rich_echo") == curated
    assert listed(everything["tools"], "rich_progress")["curation"]["alias"] is None
    one = await client.get("/tools/rich_echo", headers=admin_headers)
    assert await one.json() == curated
    by_alias = await client.get("/tools/say_back", headers=admin_headers)
    assert by_alias.status == 200 and (await by_alias.json())["name"] == "rich_echo"


async def test_patch_is_partial_and_null_clears_one_field(
    client: Client, admin_headers: dict[str, str], curated: JSON
) -> None:
    response = await client.patch(
        "/tools/say_back", json={"title": None, "enabled": True}, headers=admin_headers
    )
    assert response.status == 200
    body = await response.json()
    assert body["curation"] == {**CURATION, "title": None}
    assert body["listed"]["name"] == "say_back" and "title" not in body["listed"]


async def test_patch_of_an_unknown_tool_returns_404_naming_it(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.patch("/tools/nope", json={"title": "x"}, headers=admin_headers)
    assert "'nope'" in await error_message(response, 404)


async def test_an_alias_that_is_another_tools_name_returns_409_naming_both(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.patch(
        "/tools/rich_echo", json={"alias": "faulty_count"}, headers=admin_headers
    )
    assert response.status == 409
    message = (await response.json())["error"]["message"]
    assert "'rich_echo'" in message and "'faulty_count'" in message


async def test_an_alias_that_is_another_tools_alias_returns_409_naming_both(
    client: Client, admin_headers: dict[str, str], curated: JSON
) -> None:
    response = await client.patch(
        "/tools/faulty_count", json={"alias": "say_back"}, headers=admin_headers
    )
    assert response.status == 409
    message = (await response.json())["error"]["message"]
    assert "'faulty_count'" in message and "'rich_echo'" in message


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"alias": "has space"}, "alias"),
        ({"alias": 7}, "alias"),
        ({"alias": "search_tools"}, "reserved"),
        ({"title": ["x"]}, "title"),
        ({"description": "x" * 10_001}, "description"),
        ({"annotations": {"readOnlyHint": "yes"}}, "readOnlyHint"),
        ({"annotations": {"dangerous": True}}, "dangerous"),
        ({"annotations": []}, "annotations"),
        ({"tags": "mail"}, "tags"),
        ({"tags": ["no spaces please"]}, "tags"),
        ({"tags": [f"t{i}" for i in range(33)]}, "tags"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_curation_returns_422_naming_the_field(
    client: Client, admin_headers: dict[str, str], payload: JSON, named: str
) -> None:
    response = await client.patch("/tools/rich_echo", json=payload, headers=admin_headers)
    assert named in await error_message(response, 422)
    after = await (await client.get("/tools/rich_echo", headers=admin_headers)).json()
    assert after["curation"]["alias"] is None


# --- what agents see -----------------------------------------------------------------------------


async def test_rpc_lists_the_curated_view_and_calls_by_alias_and_by_gateway_name(
    client: Client, curated: JSON
) -> None:
    tools = (await rpc(client, "tools/list"))["result"]["tools"]
    names = [t["name"] for t in tools]
    assert "say_back" in names and "rich_echo" not in names
    assert names == sorted(names)
    shown = listed(tools, "say_back")
    assert shown["description"] == CURATION["description"]
    assert shown["title"] == CURATION["title"]
    assert shown["annotations"] == CURATION["annotations"]
    assert "inputSchema" in shown
    for name in ("say_back", "rich_echo"):
        answer = await rpc(client, "tools/call", {"name": name, "arguments": {"text": "hi"}})
        assert answer["result"]["content"][0]["text"] == "hi"
    direct = await rpc(client, "say_back", {"text": "direct"})
    assert direct["result"]["content"][0]["text"] == "direct"


async def test_mcp_lists_the_curated_view_and_calls_by_alias(client: Client, curated: JSON) -> None:
    session = await open_session(client)
    tools = (await call(client, session, "tools/list"))["result"]["tools"]
    assert listed(tools, "say_back")["title"] == "Say it back"
    answer = await call(
        client, session, "tools/call", {"name": "say_back", "arguments": {"text": "hey"}}
    )
    assert answer["result"]["content"][0]["text"] == "hey"


async def test_legacy_sse_lists_the_curated_view(client: Client, curated: JSON) -> None:
    sse = await open_sse(client)
    await streams_attached(client, 1)
    await sse.request("initialize", {"protocolVersion": "2024-11-05", "capabilities": {}})
    answer = await sse.request("tools/list", request_id=2)
    assert "say_back" in [t["name"] for t in answer["result"]["tools"]]


async def test_curating_sends_tools_list_changed(
    client: Client, admin_headers: dict[str, str]
) -> None:
    session = await open_session(client)
    reader = await open_get_stream(client, session)
    await streams_attached(client, 1)
    response = await client.patch(
        "/tools/rich_echo", json={"description": "new words"}, headers=admin_headers
    )
    assert response.status == 200
    assert (await reader.message())["method"] == "notifications/tools/list_changed"
    tools = (await call(client, session, "tools/list"))["result"]["tools"]
    assert listed(tools, "rich_echo")["description"] == "new words"


async def test_annotations_are_laid_over_the_upstreams_key_by_key(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.patch(
        "/tools/rich_echo",
        json={"annotations": {"destructiveHint": False, "title": "Echo"}},
        headers=admin_headers,
    )
    body = await response.json()
    assert body["annotations"] is None  # the upstream gives none
    assert body["listed"]["annotations"] == {"destructiveHint": False, "title": "Echo"}


# --- virtual servers by tag ----------------------------------------------------------------


async def test_a_virtual_server_selects_tools_by_tag_as_well_as_by_name(
    client: Client, admin_headers: dict[str, str], curated: JSON
) -> None:
    response = await client.post(
        "/servers",
        json={"id": "texts", "tools": ["faulty_count"], "tags": ["text"]},
        headers=admin_headers,
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["tags"] == ["text"]
    session = await open_session(client, path="/servers/texts/mcp")
    tools = (await call(client, session, "tools/list", path="/servers/texts/mcp"))["result"]
    assert [t["name"] for t in tools["tools"]] == ["faulty_count", "say_back"]
    await client.patch("/tools/rich_echo", json={"tags": None}, headers=admin_headers)
    tools = (await call(client, session, "tools/list", path="/servers/texts/mcp"))["result"]
    assert [t["name"] for t in tools["tools"]] == ["faulty_count"]


async def test_a_virtual_server_may_name_a_tool_by_its_alias(
    client: Client, admin_headers: dict[str, str], curated: JSON
) -> None:
    response = await client.post(
        "/servers", json={"id": "one", "tools": ["say_back"]}, headers=admin_headers
    )
    assert response.status == 201, await response.text()
    session = await open_session(client, path="/servers/one/mcp")
    tools = (await call(client, session, "tools/list", path="/servers/one/mcp"))["result"]
    assert [t["name"] for t in tools["tools"]] == ["say_back"]


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"tags": "text"}, "tags"),
        ({"tags": ["a b"]}, "tags"),
        ({"tool_mode": "grid"}, "tool_mode"),
    ],
)
async def test_invalid_server_tags_or_tool_mode_return_422(
    client: Client, admin_headers: dict[str, str], payload: JSON, named: str
) -> None:
    response = await client.post("/servers", json={"id": "x", **payload}, headers=admin_headers)
    assert named in await error_message(response, 422)


def test_an_alias_a_later_tool_took_as_its_name_is_not_applied() -> None:
    """The store refuses such an alias, but an upstream registered later may bring a tool of
    that name: the tool keeps its name, and the curated tool its gateway name."""
    tools = [
        ToolRecord("a__echo", "a", ToolDef("echo", {"type": "object"})),
        ToolRecord("say_back", "b", ToolDef("say_back", {"type": "object"})),
    ]
    curated = ToolOverride("a__echo", alias="say_back", title="Say it back")
    data = CatalogueData(version=1, upstreams=[], tools=tools, overrides=[curated])
    view = Catalogue.build(data, {}).everything
    assert [(t["name"], t.get("title")) for t in view.tool_list] == [
        ("a__echo", "Say it back"),
        ("say_back", None),
    ]
    assert view.tools["say_back"].record.upstream == "b"


async def test_a_curation_survives_a_refresh_of_its_upstream(
    gateway: GatewayFactory, own_upstream: RunningUpstream, admin_headers: dict[str, str]
) -> None:
    client = await gateway()
    payload = {"name": "own", "url": own_upstream.url, "transport": "streamable-http"}
    registered = await client.post("/upstreams", json=payload, headers=admin_headers)
    assert registered.status == 201, await registered.text()
    curated = await client.patch(
        "/tools/own__echo", json={"alias": "say", "tags": ["t"]}, headers=admin_headers
    )
    assert curated.status == 200, await curated.text()
    for _ in range(2):  # a refresh, then the upstream removed and registered again
        refreshed = await client.post("/upstreams/own/refresh", json={}, headers=admin_headers)
        assert refreshed.status == 200, await refreshed.text()
        tools = (await rpc(client, "tools/list", headers=admin_headers))["result"]["tools"]
        assert "say" in [t["name"] for t in tools]
        await client.delete("/upstreams/own", headers=admin_headers)
        again = await client.post("/upstreams", json=payload, headers=admin_headers)
        assert again.status == 201, await again.text()
    answer = await rpc(
        client, "tools/call", {"name": "say", "arguments": {"text": "back"}}, admin_headers
    )
    assert answer["result"]["content"][0]["text"] == "back"
