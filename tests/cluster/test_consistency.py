"""Once a write has returned, every worker of every instance serves what it wrote.

Each write goes through one worker; the requests that follow go out at once, each on a
connection of its own, so they land on every worker of every instance. The store poll is
set to a minute: only the write's barrier can explain that the other workers already
serve the change. Every check runs `ROUNDS` times, to catch races.

The writes covered: registering and deleting an upstream, enabling and disabling a tool,
curating a tool's alias, creating and deleting a virtual server and changing its tool mode
and interceptors, changing a role, and ending a session.

Variants: one instance of 2 workers on Redis and on the database cache (PostgreSQL), and
two instances of 2 workers sharing PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.cacheuse import CacheUse
from gateway.consistency import Consistency
from gateway.mcp.permissions import FORBIDDEN
from gateway_plugins.cache_memory import MemoryCache
from gateway_plugins.cache_redis import RedisCache
from tests.cluster.deployment import (
    ADMIN,
    METHOD_NOT_FOUND,
    USER,
    Deployment,
    Reply,
    burst,
    call_tool,
    fetch,
    gateway_env,
    patch_tool,
    register,
    start_deployment,
    stop_deployment,
    upstream_tool_calls,
    wait_until,
)
from tests.conftest import fresh_schema
from tests.interceptors.conftest import require_guardrails
from tests.support.mcp_session import open_session
from tests.upstreams.processes import RunningUpstream

pytestmark = pytest.mark.timeout(300)

ROUNDS = 30
SPREAD = 6
"""Requests per instance after each write, side by side."""
POLL_INTERVAL = "60"
MCP_VERSION = "2025-06-18"
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


@dataclass(frozen=True)
class Variant:
    id: str
    cache_type: str
    instances: int


VARIANTS = [
    Variant("redis", "redis", 1),
    Variant("database-postgres", "database", 1),
    Variant("redis-two-instances", "redis", 2),
]


def environment(
    variant: Variant, request: pytest.FixtureRequest, database_url: str, **extra: str
) -> dict[str, str]:
    settings = {
        "CACHE_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
        "CATALOGUE_POLL_INTERVAL": POLL_INTERVAL,
        **extra,
    }
    if variant.cache_type == "redis":
        settings["REDIS_URL"] = str(request.getfixturevalue("redis_base_url"))
    return gateway_env(database_url, variant.cache_type, **settings)


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: v.id)
def deployment(
    request: pytest.FixtureRequest, postgres_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """One deployment per variant serves all its tests, on a PostgreSQL schema of its own."""
    variant: Variant = request.param
    with fresh_schema(postgres_base_url) as database_url:
        env = environment(variant, request, database_url)
        workdir = tmp_path_factory.mktemp(variant.id)
        running = asyncio.run(start_deployment(env, workdir, variant.instances, workers=2))
        try:
            yield running
        finally:
            stop_deployment(running)


# --- requests ------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


async def everywhere(
    deployment: Deployment, request: Callable[[str], Awaitable[Reply]]
) -> list[Reply]:
    """`request(url)` `SPREAD` times side by side through each instance."""
    return await burst(
        request(instance.url) for instance in deployment.instances for _ in range(SPREAD)
    )


async def modern_call(url: str, tool: str) -> Reply:
    """A 2026-07-28 stateless `tools/call` at `/mcp`."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "consistency-test", "version": "1"},
    }
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"text": "modern"}, "_meta": meta},
    }
    headers = {
        **USER,
        "Accept": ACCEPT,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    return await fetch("POST", f"{url}/mcp", message, headers)


async def mcp_post(url: str, message: dict[str, Any], session: str | None = None) -> Reply:
    """A handshake-era POST to `url` (an `/mcp` endpoint), with the session if given."""
    headers = {**USER, "Accept": ACCEPT, "MCP-Protocol-Version": MCP_VERSION}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    return await fetch("POST", url, message, headers)


def tools_call(tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": {"text": "hello"} if arguments is None else arguments,
        },
    }


TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def succeeded(reply: Reply) -> bool:
    return reply.ok


def unknown(reply: Reply) -> bool:
    error = reply.body.get("error") or {}
    return (
        reply.status == 200
        and reply.error_code == METHOD_NOT_FOUND
        and "Unknown tool" in str(error.get("message"))
    )


def disabled(reply: Reply) -> bool:
    error = reply.body.get("error") or {}
    return reply.status == 200 and "disabled" in str(error.get("message"))


def failing(replies: list[Reply], check: Callable[[Reply], bool]) -> list[Reply]:
    return [reply for reply in replies if not check(reply)]


def answered(status: int) -> Callable[[Reply], bool]:
    return lambda reply: reply.status == status


async def delete_upstream(url: str, name: str, missing_ok: bool = False) -> None:
    reply = await fetch("DELETE", f"{url}/upstreams/{name}", headers=ADMIN)
    assert reply.status == 204 or (missing_ok and reply.status == 404), reply


# --- the guarantees --------------------------------------------------------------------------


async def test_a_tool_is_never_unknown_once_its_registration_returned(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("reg")
    tool = f"{name}__echo"
    try:
        for round_ in range(ROUNDS):
            await register(deployment.a.url, own_upstream.url, name)
            # Through /rpc, and through the 2026-07-28 stateless path of /mcp.
            direct = await everywhere(deployment, lambda url: call_tool(url, tool, {"text": "x"}))
            modern = await everywhere(deployment, lambda url: modern_call(url, tool))
            wrong = failing(direct + modern, succeeded)
            assert not wrong, (round_, wrong[:3])

            await delete_upstream(deployment.b.url, name)
            gone = await everywhere(deployment, lambda url: call_tool(url, tool, {"text": "x"}))
            assert not failing(gone, unknown), (round_, failing(gone, unknown)[:3])
    finally:
        await delete_upstream(deployment.a.url, name, missing_ok=True)


async def test_a_disabled_tool_is_never_called_once_disabling_returned(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("dis")
    tool = f"{name}__echo"
    await register(deployment.a.url, own_upstream.url, name)
    try:
        for round_ in range(ROUNDS):
            await patch_tool(deployment.a.url, tool, enabled=False)
            before = await upstream_tool_calls(own_upstream.base_url)
            refused = await everywhere(deployment, lambda url: call_tool(url, tool, {"text": "no"}))
            assert not failing(refused, disabled), (round_, failing(refused, disabled)[:3])
            assert await upstream_tool_calls(own_upstream.base_url) == before, round_

            await patch_tool(deployment.b.url, tool, enabled=True)
            served = await everywhere(deployment, lambda url: call_tool(url, tool, {"text": "yes"}))
            assert not failing(served, succeeded), (round_, failing(served, succeeded)[:3])
    finally:
        await delete_upstream(deployment.a.url, name)


async def through_server(deployment: Deployment, server: str, tool: str) -> list[Reply]:
    """Sessionless calls of `tool` at the virtual server's `/mcp`, through every instance."""
    return await everywhere(
        deployment, lambda url: mcp_post(f"{url}/servers/{server}/mcp", tools_call(tool))
    )


async def test_a_virtual_server_is_served_once_created_and_404_once_deleted(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("vs")
    tool = f"{name}__echo"
    await register(deployment.a.url, own_upstream.url, name)
    try:
        for round_ in range(ROUNDS):
            server = f"{name}-{round_}"
            created = await fetch(
                "POST", f"{deployment.a.url}/servers", {"id": server, "tools": [tool]}, ADMIN
            )
            assert created.status == 201, created
            served = await through_server(deployment, server, tool)
            assert not failing(served, succeeded), (round_, failing(served, succeeded)[:3])

            deleted = await fetch("DELETE", f"{deployment.b.url}/servers/{server}", headers=ADMIN)
            assert deleted.status == 204, deleted
            gone = await through_server(deployment, server, tool)
            assert not failing(gone, answered(404)), (round_, failing(gone, answered(404))[:3])
    finally:
        await delete_upstream(deployment.a.url, name)


async def pings(deployment: Deployment, session: str) -> list[Reply]:
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    return await everywhere(deployment, lambda url: mcp_post(f"{url}/mcp", ping, session))


async def test_an_ended_session_is_404_on_every_worker_once_delete_returned(
    deployment: Deployment,
) -> None:
    headers = {**USER, "MCP-Protocol-Version": MCP_VERSION}
    for round_ in range(ROUNDS):
        # A connection per request, as every other request of these tests.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            session = await open_session(http, MCP_VERSION, f"{deployment.a.url}/mcp", headers)
        # Every worker that answers keeps a short-lived copy of the session.
        used = await pings(deployment, session)
        assert not failing(used, answered(200)), (round_, failing(used, answered(200))[:3])

        in_session = {**headers, "Mcp-Session-Id": session}
        ended = await fetch("DELETE", f"{deployment.b.url}/mcp", headers=in_session)
        assert ended.status == 204, ended
        after = await pings(deployment, session)
        assert not failing(after, answered(404)), (round_, failing(after, answered(404))[:3])


# --- curation, upstreams, roles and a virtual server's settings ----------------------------


def listed_names(reply: Reply) -> list[str] | None:
    """The tool names of a `tools/list` answer; None if it is not one."""
    result = reply.body.get("result")
    if reply.status != 200 or not isinstance(result, dict):
        return None
    return [tool["name"] for tool in result.get("tools", [])]


def lists(
    present: AbstractSet[str], absent: AbstractSet[str] = frozenset()
) -> Callable[[Reply], bool]:
    """A `tools/list` answer that lists every name of `present` and none of `absent`."""

    def check(reply: Reply) -> bool:
        names = listed_names(reply)
        return names is not None and present <= set(names) and not absent & set(names)

    return check


def lists_exactly(names: AbstractSet[str]) -> Callable[[Reply], bool]:
    def check(reply: Reply) -> bool:
        listed = listed_names(reply)
        return listed is not None and sorted(listed) == sorted(names)

    return check


def forbidden(reply: Reply) -> bool:
    error = reply.body.get("error") or {}
    return (
        reply.status == 200
        and reply.error_code == FORBIDDEN
        and "needs a role" in str(error.get("message"))
    )


def answers_text(text: str) -> Callable[[Reply], bool]:
    """A tool call that succeeded with `text` as its only content."""
    return lambda reply: (
        reply.ok and reply.body["result"]["content"] == [{"type": "text", "text": text}]
    )


def found(tool: str) -> Callable[[Reply], bool]:
    """A `search_tools` result naming `tool`."""

    def check(reply: Reply) -> bool:
        result = reply.body.get("result")
        if reply.status != 200 or not isinstance(result, dict):
            return False
        hits = (result.get("structuredContent") or {}).get("tools", [])
        return tool in [hit.get("name") for hit in hits]

    return check


async def calls(deployment: Deployment, tool: str, text: str = "x") -> list[Reply]:
    """`tool` called by that name through `/rpc`, everywhere."""
    return await everywhere(deployment, lambda url: call_tool(url, tool, {"text": text}))


async def rpc_list(url: str) -> Reply:
    return await fetch("POST", f"{url}/rpc", TOOLS_LIST, USER)


async def patch_server(url: str, server: str, **changes: object) -> None:
    reply = await fetch("PATCH", f"{url}/servers/{server}", changes, ADMIN)
    assert reply.status == 200, reply


async def create_server(url: str, server: dict[str, Any]) -> None:
    created = await fetch("POST", f"{url}/servers", server, ADMIN)
    assert created.status == 201, created


async def delete_server(url: str, server: str) -> None:
    deleted = await fetch("DELETE", f"{url}/servers/{server}", headers=ADMIN)
    assert deleted.status in (204, 404), deleted


async def test_a_tool_answers_to_its_alias_once_set_and_not_once_removed(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("cur")
    tool = f"{name}__echo"
    await register(deployment.a.url, own_upstream.url, name)
    try:
        for round_ in range(ROUNDS):
            # A fresh alias each round: a worker that missed the change cannot know it.
            alias = f"{name}_as_{round_}"
            await patch_tool(deployment.a.url, tool, alias=alias)
            called = await calls(deployment, alias)
            assert not failing(called, succeeded), (round_, failing(called, succeeded)[:3])
            listed = await everywhere(deployment, rpc_list)
            shown = lists({alias}, absent={tool})
            assert not failing(listed, shown), (round_, failing(listed, shown)[:3])

            await patch_tool(deployment.b.url, tool, alias=None)
            gone = await calls(deployment, alias)
            assert not failing(gone, unknown), (round_, failing(gone, unknown)[:3])
            listed = await everywhere(deployment, rpc_list)
            shown = lists({tool}, absent={alias})
            assert not failing(listed, shown), (round_, failing(listed, shown)[:3])
    finally:
        await delete_upstream(deployment.a.url, name)


async def test_a_deleted_upstreams_tools_are_unknown_by_name_and_alias_once_deletion_returned(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("del")
    tool, alias = f"{name}__echo", f"{name}_alias"
    await register(deployment.a.url, own_upstream.url, name)
    # The curation outlives the upstream: each registration below brings the alias back.
    await patch_tool(deployment.a.url, tool, alias=alias)
    try:
        for round_ in range(ROUNDS):
            if round_:
                await register(deployment.a.url, own_upstream.url, name)
            called = await calls(deployment, alias)
            assert not failing(called, succeeded), (round_, failing(called, succeeded)[:3])

            await delete_upstream(deployment.b.url, name)
            by_name = await calls(deployment, tool)
            by_alias = await calls(deployment, alias)
            wrong = failing(by_name + by_alias, unknown)
            assert not wrong, (round_, wrong[:3])
            listed = await everywhere(deployment, rpc_list)
            shown = lists(set(), absent={tool, alias})
            assert not failing(listed, shown), (round_, failing(listed, shown)[:3])
    finally:
        await delete_upstream(deployment.a.url, name, missing_ok=True)


async def test_a_tool_a_role_stops_granting_is_refused_once_the_change_returned(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("rol")
    tool, role = f"{name}__echo", unique("role-")
    # The role applies to the caller of `USER`; while it exists, it is all that caller gets.
    granting = {"match": {"subjects": ["user"]}, "servers": ["*"], "tools": [tool]}
    withholding = {**granting, "tools": [f"{name}__other"]}
    await register(deployment.a.url, own_upstream.url, name)
    created = await fetch("POST", f"{deployment.a.url}/roles", {"name": role, **granting}, ADMIN)
    assert created.status == 201, created
    try:
        for round_ in range(ROUNDS):
            changed = await fetch("PUT", f"{deployment.a.url}/roles/{role}", withholding, ADMIN)
            assert changed.status == 200, changed
            before = await upstream_tool_calls(own_upstream.base_url)
            refused = await calls(deployment, tool, "no")
            assert not failing(refused, forbidden), (round_, failing(refused, forbidden)[:3])
            assert await upstream_tool_calls(own_upstream.base_url) == before, round_

            changed = await fetch("PUT", f"{deployment.b.url}/roles/{role}", granting, ADMIN)
            assert changed.status == 200, changed
            served = await calls(deployment, tool, "ok")
            assert not failing(served, succeeded), (round_, failing(served, succeeded)[:3])
    finally:
        deleted = await fetch("DELETE", f"{deployment.a.url}/roles/{role}", headers=ADMIN)
        assert deleted.status == 204, deleted
        await delete_upstream(deployment.a.url, name)


SEARCH_TOOLS = {"search_tools", "describe_tool", "call_tool"}


async def test_a_server_switched_to_search_mode_lists_and_serves_the_search_tools_at_once(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    name = unique("srch")
    tool, server = f"{name}__echo", f"{name}-server"
    await register(deployment.a.url, own_upstream.url, name)
    await create_server(deployment.a.url, {"id": server, "tools": [tool]})
    endpoint = f"/servers/{server}/mcp"
    search = tools_call("search_tools", {"query": "echo"})
    try:
        for round_ in range(ROUNDS):
            await patch_server(deployment.a.url, server, tool_mode="search")
            listed = await everywhere(deployment, lambda url: mcp_post(url + endpoint, TOOLS_LIST))
            shown = lists_exactly(SEARCH_TOOLS)
            assert not failing(listed, shown), (round_, failing(listed, shown)[:3])
            searched = await everywhere(deployment, lambda url: mcp_post(url + endpoint, search))
            assert not failing(searched, found(tool)), (round_, failing(searched, found(tool))[:3])

            await patch_server(deployment.b.url, server, tool_mode="list")
            listed = await everywhere(deployment, lambda url: mcp_post(url + endpoint, TOOLS_LIST))
            shown = lists_exactly({tool})
            assert not failing(listed, shown), (round_, failing(listed, shown)[:3])
            searched = await everywhere(deployment, lambda url: mcp_post(url + endpoint, search))
            assert not failing(searched, unknown), (round_, failing(searched, unknown)[:3])
    finally:
        await delete_server(deployment.a.url, server)
        await delete_upstream(deployment.a.url, name)


async def test_a_servers_interceptors_apply_on_every_worker_once_the_change_returned(
    deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    require_guardrails()
    name = unique("icp")
    tool, server = f"{name}__echo", f"{name}-server"
    await register(deployment.a.url, own_upstream.url, name)
    await create_server(deployment.a.url, {"id": server, "tools": [tool], "interceptors": []})
    endpoint = f"/servers/{server}/mcp"
    # Always the same call: a worker still running the old chain would answer it differently.
    mail = tools_call(tool, {"text": "mail ann.lee@example.com"})
    redacted, plain = (
        answers_text("mail [REDACTED:email]"),
        answers_text("mail ann.lee@example.com"),
    )
    try:
        for round_ in range(ROUNDS):
            await patch_server(deployment.a.url, server, interceptors=["pii"])
            called = await everywhere(deployment, lambda url: mcp_post(url + endpoint, mail))
            assert not failing(called, redacted), (round_, failing(called, redacted)[:3])

            await patch_server(deployment.b.url, server, interceptors=[])
            called = await everywhere(deployment, lambda url: mcp_post(url + endpoint, mail))
            assert not failing(called, plain), (round_, failing(called, plain)[:3])
    finally:
        await delete_server(deployment.a.url, server)
        await delete_upstream(deployment.a.url, name)


# --- a worker that dies ---------------------------------------------------------------------

HEARTBEAT_TTL = 5.0
LONG_TIMEOUT = 120.0
"""`CONSISTENCY_TIMEOUT` of this test: far longer than the bound asserted, so only the dead
worker's heartbeat running out can explain a write that returns in time."""


async def test_a_killed_worker_holds_writes_back_no_longer_than_its_heartbeat(
    request: pytest.FixtureRequest,
    postgres_url: str,
    tmp_path: Path,
    own_upstream: RunningUpstream,
) -> None:
    variant = VARIANTS[0]
    env = environment(variant, request, postgres_url, CONSISTENCY_TIMEOUT=str(LONG_TIMEOUT))
    running = await start_deployment(env, tmp_path, instances=1, workers=2)
    try:
        url, tool = running.a.url, "own__echo"
        await register(url, own_upstream.url)
        victim = running.a.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)

        started = time.perf_counter()
        await patch_tool(url, tool, enabled=False)
        took = time.perf_counter() - started
        print(f"\nwrite with a killed worker took {took:.2f} s")
        assert took < HEARTBEAT_TTL + 10.0 < LONG_TIMEOUT

        refused = await everywhere(running, lambda u: call_tool(u, tool, {"text": "no"}))
        assert not failing(refused, disabled), failing(refused, disabled)[:3]

        # gunicorn has put a new worker in its place; writes keep their guarantee.
        await wait_until(lambda: _serves_two_workers(running, exclude=victim), 30.0, "a new worker")
        await patch_tool(url, tool, enabled=True)
        served = await everywhere(running, lambda u: call_tool(u, tool, {"text": "yes"}))
        assert not failing(served, succeeded), failing(served, succeeded)[:3]
    finally:
        stop_deployment(running)


async def _serves_two_workers(deployment: Deployment, exclude: int) -> bool:
    try:
        return len(await deployment.views(exclude=[exclude])) >= 2
    except AssertionError:
        return False


# --- the barrier itself, two members in one process ----------------------------------------

BARRIER_TIMEOUT = 1.0


@pytest.fixture
async def members(redis_base_url: str, cache_prefix: str) -> AsyncIterator[list[Consistency]]:
    """Two members of one cluster on a real Redis, as two workers would be."""
    cache = RedisCache(redis_base_url, cache_prefix, timeout=2.0)
    await cache.start()
    use = CacheUse(cache, "redis", "consistency", 2.0)
    started = [Consistency(use, BARRIER_TIMEOUT, shared=True) for _ in range(2)]
    for member in started:
        await member.start()
    yield started
    for member in started:
        await member.close()
    await cache.close()


async def test_a_write_returns_once_the_other_member_applied_it(
    members: list[Consistency],
) -> None:
    writer, other = members
    announced: list[str] = []

    async def announce(change: str) -> None:
        announced.append(change)
        await other.applied(change)

    started = time.perf_counter()
    with capture_logs() as logs:
        await writer.everywhere("catalogue", announce)
    assert time.perf_counter() - started < BARRIER_TIMEOUT
    assert len(announced) == 1
    assert not [entry for entry in logs if entry["log_level"] == "warning"]


async def test_a_write_no_member_confirms_returns_at_the_timeout_naming_the_silent_one(
    members: list[Consistency],
) -> None:
    writer, silent = members
    announced: list[str] = []

    async def announce(change: str) -> None:
        announced.append(change)

    started = time.perf_counter()
    with capture_logs() as logs:
        await writer.everywhere("session-closed", announce)
    took = time.perf_counter() - started
    assert BARRIER_TIMEOUT <= took < BARRIER_TIMEOUT + 5.0
    # Announced again while waiting, in case pub/sub lost the message; always the same change.
    assert len(announced) >= 2 and len(set(announced)) == 1
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["workers"] == [silent.worker] and warning["change"] == "session-closed"


async def test_a_member_that_left_is_not_waited_for(members: list[Consistency]) -> None:
    writer, leaving = members
    await leaving.close()

    async def announce(change: str) -> None:
        pass

    started = time.perf_counter()
    with capture_logs() as logs:
        await writer.everywhere("catalogue", announce)
    assert time.perf_counter() - started < BARRIER_TIMEOUT
    assert not [entry for entry in logs if entry["log_level"] == "warning"]


async def test_with_a_cache_of_one_worker_a_write_announces_and_waits_for_nobody() -> None:
    use = CacheUse(MemoryCache(100, "p"), "memory", "consistency", 1.0)
    member = Consistency(use, timeout=60.0, shared=False)
    await member.start()
    announced: list[str] = []

    async def announce(change: str) -> None:
        announced.append(change)

    await asyncio.wait_for(member.everywhere("catalogue", announce), timeout=5.0)
    assert len(announced) == 1
    await member.close()
