"""Curation under gunicorn: once `PATCH /tools/{name}` has returned through one worker, the
next requests, on fresh connections that land on every worker, list the curated view, call
by the alias, and search a search-mode server by the new words. The store poll is a
minute, so only the write's barrier can explain that the other worker already serves it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.deployment import (
    ADMIN,
    USER,
    Deployment,
    Reply,
    burst,
    call_tool,
    deployed,
    fetch,
    patch_tool,
    redis_env,
    register,
)
from tests.upstreams.processes import RunningUpstream

pytestmark = pytest.mark.timeout(300)

ROUNDS = 8
SPREAD = 8
"""Requests after each write, side by side, each on a connection of its own."""
ACCEPT = "application/json, text/event-stream"


@pytest.fixture(scope="module")
def deployment(
    module_postgres_url: str, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    env = redis_env(module_postgres_url, redis_base_url)
    with deployed(env, tmp_path_factory.mktemp("curation"), 1, 2) as running:
        yield running


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


async def stateless_mcp(url: str, method: str, params: dict[str, Any]) -> Reply:
    """One request on a new /mcp session of its own: initialize, then the request."""
    headers = {**USER, "Accept": ACCEPT, "MCP-Protocol-Version": "2025-06-18"}
    init = rpc(
        "initialize",
        {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}},
    )
    opened = await fetch("POST", url, init, headers)
    assert opened.status == 200, opened
    session = {**headers, "Mcp-Session-Id": opened.headers["Mcp-Session-Id"]}
    return await fetch("POST", url, rpc(method, params), session)


async def test_a_curation_is_served_by_every_worker_once_its_patch_returned(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    url = deployment.a.url
    await register(url, own_upstream.url, "cur")
    reply = await fetch(
        "POST",
        f"{url}/servers",
        {"id": "finder", "tools": ["cur__echo", "cur__add"], "tool_mode": "search"},
        ADMIN,
    )
    assert reply.status == 201, reply
    for round_ in range(ROUNDS):
        alias = f"say_{round_}"
        word = f"parrot{round_}"
        await patch_tool(url, "cur__echo", alias=alias, description=f"Repeats like a {word}.")
        listed = await burst(
            fetch("POST", f"{url}/rpc", rpc("tools/list", {}), USER) for _ in range(SPREAD)
        )
        for answer in listed:
            tools = {t["name"]: t for t in answer.body["result"]["tools"]}
            assert alias in tools and "cur__echo" not in tools, (round_, sorted(tools))
            assert tools[alias]["description"] == f"Repeats like a {word}."
        called = await burst(call_tool(url, alias, {"text": "hi"}) for _ in range(SPREAD))
        assert all(reply.ok for reply in called), (round_, called[:2])
        searched = await burst(
            stateless_mcp(
                f"{url}/servers/finder/mcp",
                "tools/call",
                {"name": "search_tools", "arguments": {"query": word}},
            )
            for _ in range(SPREAD)
        )
        for answer in searched:
            hits = answer.body["result"]["structuredContent"]["tools"]
            assert [h["name"] for h in hits] == [alias], (round_, answer)
    assert len(await deployment.views()) == 2  # both workers were up and answering
