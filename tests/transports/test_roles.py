"""Roles end to end: lists filtered and uses refused (-32003) on /rpc, /mcp (handshake and
2026-07-28 stateless requests) and /sse, virtual servers a role does not name refused,
search-mode results filtered, admin areas, the `/roles` API, and a role change holding at
once."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from gateway.mcp.permissions import FORBIDDEN
from gateway.roles import parse_roles
from tests.conftest import RUN_MINUTES, TEST_SECRET, Client, GatewayFactory, error_message, rpc
from tests.plugins import faulty, rich
from tests.transports.conftest import JSON, call, open_session
from tests.transports.test_mcp_modern import post as modern_post
from tests.transports.test_mcp_sse import open_sse

ROLES: list[JSON] = [
    {
        "name": "echoer",
        "description": "lists every rich tool, uses only the echo",
        "match": {"scopes": ["echo"]},
        "servers": ["*"],
        "tools": {"list": ["rich_*"], "use": ["rich_echo"]},
        "resources": ["rich://docs/*"],
        "prompts": ["rich_greet"],
    },
    {
        "name": "counters",
        "match": {"groups": ["counting"]},
        "servers": ["counting"],
        "tools": ["tag:numbers"],
    },
    {
        "name": "auditor",
        "match": {"subjects": ["audit-*"]},
        "admin": ["upstreams:read", "tools:read"],
    },
]


def bearer(subject: str, scopes: tuple[str, ...] = (), **claims: Any) -> dict[str, str]:
    now = int(time.time())
    payload = {"sub": subject, "iat": now, "exp": now + RUN_MINUTES * 60, **claims}
    if scopes:
        payload["scope"] = " ".join(scopes)
    return {"Authorization": f"Bearer {jwt.encode(payload, TEST_SECRET, algorithm='HS256')}"}


ECHOER = bearer("ann", ("echo",))
COUNTER = bearer("bob", groups=["counting"])
AUDITOR = bearer("audit-carol")
NOBODY = bearer("dan")
ADMIN = bearer("root", ("admin",))


@pytest.fixture
async def client(gateway: GatewayFactory) -> Client:
    client = await gateway(plugins=[rich, faulty], tool_timeout=20.0, roles=parse_roles(ROLES))
    curated = await client.patch("/tools/faulty_count", json={"tags": ["numbers"]}, headers=ADMIN)
    assert curated.status == 200, await curated.text()
    created = await client.post(
        "/servers",
        json={"id": "counting", "tools": ["faulty_count", "faulty_tick", "rich_echo"]},
        headers=ADMIN,
    )
    assert created.status == 201, await created.text()
    return client


def names(result: JSON, key: str = "tools", field: str = "name") -> list[str]:
    return sorted(item[field] for item in result[key])


# --- lists and calls on each transport -----------------------------------------------------------


async def test_rpc_tools_list_shows_only_what_the_role_lists(client: Client) -> None:
    listed = await rpc(client, "tools/list", headers=ECHOER)
    assert names(listed["result"]) == ["rich_echo", "rich_progress", "rich_region", "rich_slow"]
    everything = await rpc(client, "tools/list", headers=ADMIN)
    assert "faulty_count" in names(everything["result"])


async def test_rpc_call_of_a_listed_tool_the_role_may_not_use_is_32003_naming_the_roles(
    client: Client,
) -> None:
    refused = await rpc(client, "tools/call", {"name": "rich_progress"}, headers=ECHOER)
    assert refused["error"]["code"] == FORBIDDEN
    message = refused["error"]["message"]
    assert "tool 'rich_progress'" in message and "echoer" in message
    direct = await rpc(client, "rich_progress", {}, headers=ECHOER)
    assert direct["error"]["code"] == FORBIDDEN
    allowed = await rpc(
        client, "tools/call", {"name": "rich_echo", "arguments": {"text": "hi"}}, headers=ECHOER
    )
    assert "result" in allowed, allowed


async def test_mcp_lists_and_calls_follow_the_role(client: Client) -> None:
    session = await open_session(client, headers=ECHOER)
    tools = await call(client, session, "tools/list", headers=ECHOER)
    assert "faulty_count" not in names(tools["result"])
    refused = await call(
        client, session, "tools/call", {"name": "faulty_count", "arguments": {}}, headers=ECHOER
    )
    assert refused["error"]["code"] == FORBIDDEN
    resources = await call(client, session, "resources/list", headers=ECHOER)
    assert names(resources["result"], "resources", "uri") == [
        "rich://docs/changelog",
        "rich://docs/readme",
    ]
    templates = await call(client, session, "resources/templates/list", headers=ECHOER)
    assert templates["result"]["resourceTemplates"] == []
    read = await call(client, session, "resources/read", {"uri": "rich://items/7"}, headers=ECHOER)
    assert read["error"]["code"] == FORBIDDEN
    prompts = await call(client, session, "prompts/list", headers=ECHOER)
    assert names(prompts["result"], "prompts") == ["rich_greet"]
    got = await call(client, session, "prompts/get", {"name": "rich_summary"}, headers=ECHOER)
    assert got["error"]["code"] == FORBIDDEN


async def test_sse_lists_and_calls_follow_the_role(client: Client) -> None:
    client.session.headers.update(ECHOER)
    sse = await open_sse(client)
    await sse.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    listed, _ = await sse.answer_to(1)
    assert "faulty_tick" not in names(listed["result"])
    await sse.send(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "faulty_tick"}}
    )
    refused, _ = await sse.answer_to(2)
    assert refused["error"]["code"] == FORBIDDEN


# --- virtual servers -------------------------------------------------------------------------


async def test_a_role_reaches_only_its_virtual_servers_and_uses_tools_by_tag(
    client: Client,
) -> None:
    whole = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=COUNTER
    )
    assert "counters" in await error_message(whole, 403)
    listed = await rpc(client, "tools/list", headers=COUNTER)
    assert "error" in listed or listed.get("result") is None
    session = await open_session(client, path="/servers/counting/mcp", headers=COUNTER)
    tools = await call(client, session, "tools/list", path="/servers/counting/mcp", headers=COUNTER)
    assert names(tools["result"]) == ["faulty_count"]
    counted = await call(
        client,
        session,
        "tools/call",
        {"name": "faulty_count", "arguments": {"n": 2}},
        path="/servers/counting/mcp",
        headers=COUNTER,
    )
    assert "result" in counted, counted


async def test_a_caller_no_role_applies_to_is_refused_everywhere(client: Client) -> None:
    response = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=NOBODY
    )
    assert "roles: none" in await error_message(response, 403)


async def test_search_mode_finds_and_calls_only_permitted_tools(client: Client) -> None:
    created = await client.post(
        "/servers",
        json={"id": "finder", "tools": ["rich_echo", "rich_progress"], "tool_mode": "search"},
        headers=ADMIN,
    )
    assert created.status == 201
    role = {
        "name": "finder",
        "match": {"scopes": ["find"]},
        "servers": ["finder"],
        "tools": {"list": ["rich_echo"], "use": ["rich_echo"]},
    }
    assert (await client.post("/roles", json=role, headers=ADMIN)).status == 201
    finder = bearer("fay", ("find",))
    path = "/servers/finder/mcp"
    session = await open_session(client, path=path, headers=finder)

    async def use(tool: str, arguments: JSON) -> JSON:
        params = {"name": tool, "arguments": arguments}
        return await call(client, session, "tools/call", params, path=path, headers=finder)

    found = await use("search_tools", {"query": "echo progress reports text"})
    assert [h["name"] for h in found["result"]["structuredContent"]["tools"]] == ["rich_echo"]
    hidden = await use("describe_tool", {"name": "rich_progress"})
    assert hidden["result"]["isError"] is True
    refused = await use("call_tool", {"name": "rich_progress", "arguments": {}})
    assert refused["result"]["isError"] is True


# --- admin areas -------------------------------------------------------------------------------


async def test_an_admin_area_role_reads_its_areas_and_nothing_more(client: Client) -> None:
    assert (await client.get("/upstreams", headers=AUDITOR)).status == 200
    assert (await client.get("/tools", headers=AUDITOR)).status == 200
    assert (await client.get("/servers", headers=AUDITOR)).status == 403
    refresh = await client.post("/upstreams/rich/refresh", json={}, headers=AUDITOR)
    assert refresh.status == 403
    assert (await client.get("/roles", headers=AUDITOR)).status == 403


# --- the /roles API ----------------------------------------------------------------------------


async def test_roles_api_shows_settings_roles_and_refuses_to_change_them(client: Client) -> None:
    listed = await client.get("/roles", headers=ADMIN)
    assert listed.status == 200
    roles = {r["name"]: r for r in (await listed.json())["roles"]}
    assert roles["echoer"]["source"] == "settings"
    assert roles["echoer"]["tools"] == {"list": ["rich_*"], "use": ["rich_echo"]}
    changed = await client.put("/roles/echoer", json={"match": {"scopes": ["x"]}}, headers=ADMIN)
    assert changed.status == 409
    assert (await client.delete("/roles/echoer", headers=ADMIN)).status == 409


async def test_a_role_made_changed_and_deleted_through_the_api_holds_at_once(
    client: Client,
) -> None:
    dan_role = {"name": "dans", "match": {"subjects": ["dan"]}, "servers": ["*"]}
    created = await client.post("/roles", json=dan_role, headers=ADMIN)
    assert created.status == 201, await created.text()
    assert (await created.json())["source"] == "api"
    assert (await rpc(client, "tools/list", headers=NOBODY))["result"]["tools"] == []
    replaced = await client.put(
        "/roles/dans", json={**dan_role, "tools": ["faulty_c*"]}, headers=ADMIN
    )
    assert replaced.status == 200, await replaced.text()
    listed = await rpc(client, "tools/list", headers=NOBODY)
    assert names(listed["result"]) == ["faulty_count", "faulty_crash"]
    again = await client.post("/roles", json=dan_role, headers=ADMIN)
    assert again.status == 409
    assert (await client.delete("/roles/dans", headers=ADMIN)).status == 204
    gone = await client.post(
        "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=NOBODY
    )
    assert gone.status == 403
    assert (await client.get("/roles/dans", headers=ADMIN)).status == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"name": "x"}, "needs 'match'"),
        ({"name": "bad name", "match": {"scopes": ["a"]}}, "'name'"),
        ({"name": "x", "match": {"scopes": ["a"]}, "colour": 1}, "unknown field(s): colour"),
        ({"name": "x", "match": {"scopes": ["a"]}, "resources": ["tag:a"]}, "only tools"),
        ({"name": "x", "match": {"scopes": ["a"]}, "admin": ["all of it"]}, "not an admin area"),
        ({"name": "x", "match": {"scopes": "a"}}, "list of non-empty strings"),
    ],
)
async def test_a_bad_role_is_422_naming_the_problem(
    client: Client, body: JSON, reason: str
) -> None:
    response = await client.post("/roles", json=body, headers=ADMIN)
    assert reason in await error_message(response, 422)


async def test_roles_api_needs_admin(client: Client) -> None:
    assert (await client.get("/roles", headers=ECHOER)).status == 403


# --- no roles --------------------------------------------------------------------------------


async def test_without_roles_an_ordinary_token_sees_and_uses_everything(
    gateway: GatewayFactory,
) -> None:
    client = await gateway(plugins=[rich, faulty])
    listed = await rpc(client, "tools/list", headers=NOBODY)
    assert "faulty_count" in names(listed["result"])
    counted = await rpc(
        client, "tools/call", {"name": "faulty_count", "arguments": {"n": 1}}, headers=NOBODY
    )
    assert "result" in counted


async def test_2026_stateless_requests_follow_the_role(client: Client) -> None:
    listed = await modern_post(client, "tools/list", headers={**ECHOER})
    assert listed.status == 200, await listed.text()
    assert "faulty_count" not in names((await listed.json())["result"])
    refused = await modern_post(
        client, "tools/call", {"name": "rich_progress", "arguments": {}}, headers={**ECHOER}
    )
    body = await refused.json()
    assert body["error"]["code"] == FORBIDDEN, body
