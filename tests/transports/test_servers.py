"""Virtual servers: the admin CRUD under `/servers`, what `/servers/{id}/mcp` and
`/servers/{id}/sse` expose, the `servers` token claim, and the `/resources` and `/prompts`
admin listings."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from gateway_plugins.jwt_tokens import create_token
from tests.conftest import TEST_SECRET, Client
from tests.plugins.rich import CHANGELOG, ITEMS, README
from tests.transports.conftest import (
    ACCEPT_BOTH,
    JSON,
    EventReader,
    call,
    init_message,
    open_get_stream,
    open_session,
    session_headers,
    streams_attached,
)

BUNDLE: JSON = {
    "id": "support",
    "name": "Support desk",
    "description": "Tools for the support agents",
    "tools": ["rich_echo", "faulty_count"],
    "resources": [README, ITEMS],
    "prompts": ["rich_greet"],
}


def bearer(subject: str = "user", scopes: tuple[str, ...] = (), servers: Any = None) -> JSON:
    if servers is None or isinstance(servers, list):
        token = create_token(TEST_SECRET, subject, list(scopes), 5, servers=servers or ())
    else:
        now = int(time.time())
        payload = {"sub": subject, "iat": now, "exp": now + 300, "servers": servers}
        token = jwt.encode(payload, TEST_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def support(client: Client, admin_headers: dict[str, str]) -> JSON:
    response = await client.post("/servers", json=BUNDLE, headers=admin_headers)
    assert response.status == 201, await response.text()
    created: JSON = await response.json()
    return created


# --- CRUD ---------------------------------------------------------------------------------------


async def test_create_returns_the_server_with_its_endpoints(support: JSON) -> None:
    assert {k: support[k] for k in BUNDLE} == BUNDLE
    assert support["endpoints"] == {"mcp": "/servers/support/mcp", "sse": "/servers/support/sse"}
    assert support["created_at"] > 0 and support["updated_at"] >= support["created_at"]


async def test_list_and_get_show_the_server(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    listed = await (await client.get("/servers", headers=admin_headers)).json()
    assert [s["id"] for s in listed["servers"]] == ["support"]
    got = await client.get("/servers/support", headers=admin_headers)
    assert got.status == 200
    assert await got.json() == support


async def test_create_with_only_an_id_makes_an_empty_bundle_named_after_it(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.post("/servers", json={"id": "empty"}, headers=admin_headers)
    assert response.status == 201
    body = await response.json()
    assert (body["name"], body["tools"], body["resources"], body["prompts"]) == (
        "empty",
        [],
        [],
        [],
    )


async def test_create_with_an_existing_id_returns_409(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    response = await client.post("/servers", json=BUNDLE, headers=admin_headers)
    assert response.status == 409


async def test_patch_changes_only_the_given_fields(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    response = await client.patch(
        "/servers/support", json={"tools": ["rich_progress"]}, headers=admin_headers
    )
    assert response.status == 200
    body = await response.json()
    assert body["tools"] == ["rich_progress"]
    assert body["prompts"] == BUNDLE["prompts"] and body["name"] == BUNDLE["name"]
    assert body["created_at"] == support["created_at"]
    fetched = await (await client.get("/servers/support", headers=admin_headers)).json()
    assert fetched["tools"] == ["rich_progress"]


async def test_delete_removes_the_server(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    response = await client.delete("/servers/support", headers=admin_headers)
    assert response.status == 204
    assert (await client.get("/servers/support", headers=admin_headers)).status == 404
    assert (await client.delete("/servers/support", headers=admin_headers)).status == 404
    gone = await client.post("/servers/support/mcp", json=init_message())
    assert gone.status == 404


async def test_get_and_patch_of_an_unknown_server_return_404(
    client: Client, admin_headers: dict[str, str]
) -> None:
    assert (await client.get("/servers/nope", headers=admin_headers)).status == 404
    patched = await client.patch("/servers/nope", json={"name": "x"}, headers=admin_headers)
    assert patched.status == 404


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ("GET", "/servers"),
        ("POST", "/servers"),
        ("GET", "/servers/support"),
        ("PATCH", "/servers/support"),
        ("DELETE", "/servers/support"),
    ],
)
async def test_crud_needs_the_admin_scope(
    client: Client, support: JSON, verb: str, path: str
) -> None:
    response = await client.request(verb, path, json={"name": "x"})
    assert response.status == 403
    anonymous = await client.request(verb, path, json={}, headers={"Authorization": ""})
    assert anonymous.status == 401


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("server_id", ["", "has space", "slash/y", "x" * 65, 7, None])
async def test_create_with_a_bad_id_returns_422(
    client: Client, admin_headers: dict[str, str], server_id: Any
) -> None:
    response = await client.post("/servers", json={"id": server_id}, headers=admin_headers)
    assert response.status == 422
    assert "'id'" in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("tools", ["rich_echo", "no_such_tool"], "tool 'no_such_tool'"),
        ("resources", ["rich://nowhere"], "resource 'rich://nowhere'"),
        ("prompts", ["no_such_prompt"], "prompt 'no_such_prompt'"),
    ],
)
async def test_create_naming_something_outside_the_catalogue_returns_422_naming_it(
    client: Client, admin_headers: dict[str, str], field: str, value: list[str], named: str
) -> None:
    response = await client.post("/servers", json={"id": "x", field: value}, headers=admin_headers)
    assert response.status == 422
    assert named in (await response.json())["error"]["message"]
    assert (await client.get("/servers/x", headers=admin_headers)).status == 404


async def test_patch_naming_an_unknown_tool_returns_422_and_changes_nothing(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    response = await client.patch(
        "/servers/support", json={"tools": ["ghost"]}, headers=admin_headers
    )
    assert response.status == 422
    assert "tool 'ghost'" in (await response.json())["error"]["message"]
    fetched = await (await client.get("/servers/support", headers=admin_headers)).json()
    assert fetched["tools"] == BUNDLE["tools"]


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "x", "colour": "red"},
        {"id": "x", "tools": "rich_echo"},
        {"id": "x", "tools": [1]},
        {"id": "x", "name": 5},
        {"id": "x", "description": None},
        {"id": "x", "name": "n" * 201},
        {"id": "x", "description": "d" * 10_001},
    ],
    ids=[
        "unknown-field",
        "tools-not-list",
        "tools-not-strings",
        "name",
        "description",
        "name-too-long",
        "description-too-long",
    ],
)
async def test_create_with_invalid_fields_returns_422(
    client: Client, admin_headers: dict[str, str], payload: JSON
) -> None:
    response = await client.post("/servers", json=payload, headers=admin_headers)
    assert response.status == 422


async def test_patch_cannot_change_the_id_or_add_unknown_fields(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    renamed = await client.patch("/servers/support", json={"id": "other"}, headers=admin_headers)
    assert renamed.status == 422
    unknown = await client.patch("/servers/support", json={"colour": "red"}, headers=admin_headers)
    assert unknown.status == 422
    assert "colour" in (await unknown.json())["error"]["message"]


async def test_body_that_is_not_a_json_object_returns_400(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.post("/servers", json=["support"], headers=admin_headers)
    assert response.status == 400


# --- what a virtual server's endpoints expose -------------------------------------------------

SERVER_MCP = "/servers/support/mcp"


async def test_initialize_on_a_virtual_server_gives_its_description_as_instructions(
    client: Client, support: JSON
) -> None:
    response = await client.post(SERVER_MCP, json=init_message(), headers={"Accept": ACCEPT_BOTH})
    assert response.status == 200
    assert response.headers["Mcp-Session-Id"]
    result = (await response.json())["result"]
    assert result["instructions"] == BUNDLE["description"]


async def test_a_virtual_server_lists_only_its_bundle(client: Client, support: JSON) -> None:
    session = await open_session(client, path=SERVER_MCP)

    async def listed(method: str, key: str, field: str) -> list[str]:
        body = await call(client, session, method, path=SERVER_MCP)
        return [item[field] for item in body["result"][key]]

    assert await listed("tools/list", "tools", "name") == ["faulty_count", "rich_echo"]
    assert await listed("resources/list", "resources", "uri") == [README]
    assert await listed("resources/templates/list", "resourceTemplates", "uriTemplate") == [ITEMS]
    assert await listed("prompts/list", "prompts", "name") == ["rich_greet"]


async def test_a_virtual_server_serves_its_bundle(client: Client, support: JSON) -> None:
    session = await open_session(client, path=SERVER_MCP)
    echoed = await call(
        client,
        session,
        "tools/call",
        {"name": "rich_echo", "arguments": {"text": "in bundle"}},
        path=SERVER_MCP,
    )
    assert echoed["result"]["content"][0]["text"] == "in bundle"
    read = await call(client, session, "resources/read", {"uri": "rich://items/3"}, path=SERVER_MCP)
    assert read["result"]["contents"][0]["text"] == "item 3"
    prompt = await call(
        client,
        session,
        "prompts/get",
        {"name": "rich_greet", "arguments": {"who": "Al"}},
        path=SERVER_MCP,
    )
    assert prompt["result"]["messages"][0]["content"]["text"] == "Hello, Al!"


async def test_calling_a_tool_outside_the_bundle_returns_32601(
    client: Client, support: JSON
) -> None:
    session = await open_session(client, path=SERVER_MCP)
    body = await call(
        client, session, "tools/call", {"name": "rich_progress", "arguments": {}}, path=SERVER_MCP
    )
    assert body["error"]["code"] == -32601


async def test_resources_and_prompts_outside_the_bundle_are_not_found(
    client: Client, support: JSON
) -> None:
    session = await open_session(client, path=SERVER_MCP)
    read = await call(client, session, "resources/read", {"uri": CHANGELOG}, path=SERVER_MCP)
    assert read["error"]["code"] == -32002
    prompt = await call(client, session, "prompts/get", {"name": "rich_summary"}, path=SERVER_MCP)
    assert prompt["error"]["code"] == -32602


async def test_an_unknown_virtual_server_returns_404(client: Client) -> None:
    response = await client.post("/servers/nope/mcp", json=init_message())
    assert response.status == 404
    stream = await client.get("/servers/nope/sse", headers={"Accept": "text/event-stream"})
    assert stream.status == 404


async def test_a_session_belongs_to_the_endpoint_that_opened_it(
    client: Client, support: JSON
) -> None:
    whole = await open_session(client)
    response = await client.post(
        SERVER_MCP,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers=session_headers(whole),
    )
    assert response.status == 404
    mine = await open_session(client, path=SERVER_MCP)
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=session_headers(mine)
    )
    assert response.status == 404


async def test_a_bundle_change_shows_at_once_on_the_virtual_server(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    session = await open_session(client, path=SERVER_MCP)
    await client.patch("/servers/support", json={"tools": ["rich_progress"]}, headers=admin_headers)
    body = await call(client, session, "tools/list", path=SERVER_MCP)
    assert [tool["name"] for tool in body["result"]["tools"]] == ["rich_progress"]


async def test_a_bundle_change_sends_tools_list_changed_to_the_virtual_servers_stream(
    client: Client, admin_headers: dict[str, str], support: JSON
) -> None:
    session = await open_session(client, path=SERVER_MCP)
    reader = await open_get_stream(client, session, path=SERVER_MCP)
    await streams_attached(client, 1)
    await client.patch("/servers/support", json={"tools": ["rich_progress"]}, headers=admin_headers)
    message = await reader.message(timeout=1.0)
    assert message["method"] == "notifications/tools/list_changed"


async def test_modern_discover_on_a_virtual_server_gives_its_description(
    client: Client, support: JSON
) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    response = await client.post(
        SERVER_MCP,
        json={"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}},
        headers={
            "Accept": ACCEPT_BOTH,
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "server/discover",
        },
    )
    assert response.status == 200
    assert (await response.json())["result"]["instructions"] == BUNDLE["description"]


async def test_the_sse_endpoint_event_points_at_the_servers_message_path(
    client: Client, support: JSON
) -> None:
    response = await client.get("/servers/support/sse", headers={"Accept": "text/event-stream"})
    assert response.status == 200
    reader = EventReader(response)
    endpoint = await reader.next()
    assert endpoint.name == "endpoint"
    assert endpoint.data.startswith("/servers/support/message?session_id=")
    await streams_attached(client, 1)
    posted = await client.post(
        endpoint.data, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    )
    assert posted.status == 202
    listed = await reader.message()
    assert [t["name"] for t in listed["result"]["tools"]] == ["faulty_count", "rich_echo"]
    elsewhere = await client.post(
        endpoint.data.replace("/servers/support", ""),
        json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
    )
    assert elsewhere.status == 404


# --- the servers claim -------------------------------------------------------------------------


@pytest.fixture
async def two_servers(client: Client, admin_headers: dict[str, str]) -> None:
    for server_id in ("a", "b"):
        response = await client.post(
            "/servers", json={"id": server_id, "tools": ["rich_echo"]}, headers=admin_headers
        )
        assert response.status == 201


@pytest.mark.parametrize("claim", [["a"], "a"], ids=["list", "space-separated"])
async def test_a_token_limited_to_a_server_reaches_only_that_server(
    client: Client, two_servers: None, claim: Any
) -> None:
    limited = bearer(servers=claim)
    session = await open_session(client, path="/servers/a/mcp", headers=limited)
    body = await call(client, session, "tools/list", path="/servers/a/mcp", headers=limited)
    assert [tool["name"] for tool in body["result"]["tools"]] == ["rich_echo"]
    for path in ("/servers/b/mcp", "/mcp"):
        response = await client.post(path, json=init_message(), headers=limited)
        assert response.status == 403, path
        assert (await response.json())["error"]["code"] == -32600
    for path in ("/servers/b/sse", "/sse"):
        response = await client.get(path, headers={"Accept": "text/event-stream", **limited})
        assert response.status == 403, path
    allowed = await client.get("/servers/a/sse", headers={"Accept": "text/event-stream", **limited})
    assert allowed.status == 200
    allowed.close()


async def test_a_token_limited_to_several_servers_reaches_each(
    client: Client, two_servers: None
) -> None:
    limited = bearer(servers=["a", "b"])
    for server_id in ("a", "b"):
        await open_session(client, path=f"/servers/{server_id}/mcp", headers=limited)
    assert (await client.post("/mcp", json=init_message(), headers=limited)).status == 403


async def test_a_token_limited_to_a_server_cannot_use_rpc_to_reach_other_tools(
    client: Client, two_servers: None
) -> None:
    limited = bearer(servers=["a"])
    response = await client.post(
        "/rpc",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "rich_progress", "arguments": {}},
        },
        headers=limited,
    )
    assert response.status == 403


# --- /resources and /prompts admin listings ----------------------------------------------------


async def test_resources_listing_shows_each_resource_and_template_with_its_owner(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/resources", headers=admin_headers)
    assert response.status == 200
    body = await response.json()
    assert [(r["uri"], r["upstream"], r["enabled"]) for r in body["resources"]] == [
        (CHANGELOG, "rich", True),
        (README, "rich", True),
    ]
    assert [(t["uriTemplate"], t["upstream"]) for t in body["resource_templates"]] == [
        (ITEMS, "rich")
    ]


async def test_prompts_listing_shows_each_prompt_with_its_owner_and_original_name(
    client: Client, admin_headers: dict[str, str]
) -> None:
    registered = await client.post(
        "/upstreams",
        json={"name": "remote", "transport": "rich-remote", "url": "http://127.0.0.1:9/mcp"},
        headers=admin_headers,
    )
    assert registered.status == 201
    body = await (await client.get("/prompts", headers=admin_headers)).json()
    assert [(p["name"], p["upstream"], p["original_name"]) for p in body["prompts"]] == [
        ("remote__rich_greet", "remote", "rich_greet"),
        ("remote__rich_summary", "remote", "rich_summary"),
        ("rich_greet", "rich", "rich_greet"),
        ("rich_summary", "rich", "rich_summary"),
    ]
    one = await client.get("/prompts/remote__rich_greet", headers=admin_headers)
    assert (await one.json())["arguments"][0]["name"] == "who"
    assert (await client.get("/prompts/nope", headers=admin_headers)).status == 404


@pytest.mark.parametrize("path", ["/resources", "/prompts", "/prompts/rich_greet"])
async def test_resource_and_prompt_listings_need_the_admin_scope(client: Client, path: str) -> None:
    assert (await client.get(path)).status == 403


async def test_patch_prompt_disables_and_enables_it(
    client: Client, admin_headers: dict[str, str]
) -> None:
    session = await open_session(client)

    async def names() -> list[str]:
        body = await call(client, session, "prompts/list")
        return [p["name"] for p in body["result"]["prompts"]]

    response = await client.patch(
        "/prompts/rich_greet", json={"enabled": False}, headers=admin_headers
    )
    assert response.status == 200
    assert (await response.json())["enabled"] is False
    assert await names() == ["rich_summary"]
    await client.patch("/prompts/rich_greet", json={"enabled": True}, headers=admin_headers)
    assert await names() == ["rich_greet", "rich_summary"]


async def test_patch_resource_by_uri_disables_and_enables_it(
    client: Client, admin_headers: dict[str, str]
) -> None:
    session = await open_session(client)

    async def uris() -> list[str]:
        body = await call(client, session, "resources/list")
        return [r["uri"] for r in body["result"]["resources"]]

    response = await client.patch(
        "/resources", params={"uri": README}, json={"enabled": False}, headers=admin_headers
    )
    assert response.status == 200
    assert (await response.json())["enabled"] is False
    assert await uris() == [CHANGELOG]
    await client.patch(
        "/resources", params={"uri": README}, json={"enabled": True}, headers=admin_headers
    )
    assert await uris() == [CHANGELOG, README]


async def test_patch_resource_template_by_uri_disables_it(
    client: Client, admin_headers: dict[str, str]
) -> None:
    session = await open_session(client)
    response = await client.patch(
        "/resources", params={"uri": ITEMS}, json={"enabled": False}, headers=admin_headers
    )
    assert response.status == 200
    body = await response.json()
    assert (body["uriTemplate"], body["enabled"]) == (ITEMS, False)
    templates = await call(client, session, "resources/templates/list")
    assert templates["result"]["resourceTemplates"] == []
    read = await call(client, session, "resources/read", {"uri": "rich://items/1"})
    assert read["error"]["code"] == -32002


@pytest.mark.parametrize(
    "payload", [{"enabled": "no"}, {"enabled": True, "name": "x"}, {}], ids=str
)
async def test_patch_prompt_or_resource_takes_only_enabled(
    client: Client, admin_headers: dict[str, str], payload: JSON
) -> None:
    prompt = await client.patch("/prompts/rich_greet", json=payload, headers=admin_headers)
    assert prompt.status == 422
    resource = await client.patch(
        "/resources", params={"uri": README}, json=payload, headers=admin_headers
    )
    assert resource.status == 422


async def test_patch_of_an_unknown_prompt_or_resource_returns_404(
    client: Client, admin_headers: dict[str, str]
) -> None:
    prompt = await client.patch("/prompts/nope", json={"enabled": False}, headers=admin_headers)
    assert prompt.status == 404
    resource = await client.patch(
        "/resources", params={"uri": "rich://nope"}, json={"enabled": False}, headers=admin_headers
    )
    assert resource.status == 404
