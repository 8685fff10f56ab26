"""Once a write has returned, every worker of every instance serves what it wrote.

Each write goes through one worker; the requests that follow go out at once, each on a
connection of its own, so they land on every worker of every instance. The store poll is
set to a minute: only the write's barrier can explain that the other workers already
serve the change. Every check runs `ROUNDS` times, to catch races.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.cacheuse import CacheUse
from gateway.consistency import Consistency
from gateway_plugins.cache_memory import MemoryCache
from gateway_plugins.cache_redis import RedisCache
from tests.cluster.deployment import (
    ADMIN,
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


def tools_call(tool: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"text": "hello"}},
    }


def succeeded(reply: Reply) -> bool:
    return reply.ok


def unknown(reply: Reply) -> bool:
    error = reply.body.get("error") or {}
    return reply.status == 200 and "Unknown tool" in str(error.get("message"))


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


async def open_session(url: str) -> str:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "consistency-test", "version": "1"},
        },
    }
    opened = await mcp_post(f"{url}/mcp", initialize)
    assert opened.status == 200, opened
    session = opened.headers["Mcp-Session-Id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await mcp_post(f"{url}/mcp", initialized, session)).status == 202
    return session


async def pings(deployment: Deployment, session: str) -> list[Reply]:
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    return await everywhere(deployment, lambda url: mcp_post(f"{url}/mcp", ping, session))


async def test_an_ended_session_is_404_on_every_worker_once_delete_returned(
    deployment: Deployment,
) -> None:
    for round_ in range(ROUNDS):
        session = await open_session(deployment.a.url)
        # Every worker that answers keeps a short-lived copy of the session.
        used = await pings(deployment, session)
        assert not failing(used, answered(200)), (round_, failing(used, answered(200))[:3])

        headers = {**USER, "Mcp-Session-Id": session, "MCP-Protocol-Version": MCP_VERSION}
        ended = await fetch("DELETE", f"{deployment.b.url}/mcp", headers=headers)
        assert ended.status == 204, ended
        after = await pings(deployment, session)
        assert not failing(after, answered(404)), (round_, failing(after, answered(404))[:3])


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
