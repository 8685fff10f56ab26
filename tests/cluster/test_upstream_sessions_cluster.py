"""Per-client upstream sessions on a gunicorn gateway with two workers sharing a cache
(Redis, and the database cache on PostgreSQL): a client session's calls, on whichever
worker they land, go to one upstream session, opened once even when both workers need it
at the same moment, and ended once when the client ends its session on either worker.

Each worker is reached through a keep-alive connection of its own (one per worker, found
with `/version`), so the test chooses which worker serves each request."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.deployment import (
    ADMIN,
    USER,
    Deployment,
    connection_per_worker,
    fetch,
    gateway_env,
    start_deployment,
    stop_deployment,
    wait_until,
)
from tests.conftest import free_port
from tests.support.gunicorn_process import GunicornGateway
from tests.support.mcp_session import ACCEPT_BOTH, open_session
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream

pytestmark = pytest.mark.timeout(120)

JSON = dict[str, Any]
WORKERS = 2
VERSION = "2025-06-18"


@dataclass(frozen=True)
class Cluster:
    gateway: GunicornGateway
    upstream: RunningUpstream

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module", params=["redis", "database-postgresql"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two workers sharing a cache, with the counting upstream registered per-client."""
    workdir = tmp_path_factory.mktemp(str(request.param))
    # Long keep-alive: a pinned connection must stay with its worker for the whole test.
    extra = {"GUNICORN_KEEPALIVE": "120"}
    if request.param == "redis":
        env = gateway_env(
            f"sqlite:///{workdir / 'gateway.db'}",
            "redis",
            REDIS_URL=str(request.getfixturevalue("redis_base_url")),
            CACHE_PREFIX=f"test-{uuid.uuid4().hex[:10]}",
            **extra,
        )
    else:
        env = gateway_env(str(request.getfixturevalue("module_postgres_url")), "database", **extra)
    upstream = start_own("--counter")
    gateway = GunicornGateway(env, free_port(), workdir, workers=WORKERS)
    try:
        gateway.start()
        payload = {
            "name": "own",
            "url": upstream.url,
            "transport": "streamable-http",
            "session": "per-client",
        }
        reply = asyncio.run(fetch("POST", f"{gateway.url}/upstreams", payload, ADMIN))
        assert reply.status == 201, reply
        yield Cluster(gateway, upstream)
    finally:
        gateway.stop()
        stop_upstream(upstream)


# --- one connection per worker -----------------------------------------------------------------


def one_connection_per_worker(url: str) -> AbstractAsyncContextManager[list[aiohttp.ClientSession]]:
    """A keep-alive connection to each worker, each serving the counter already."""
    serving = functools.partial(serves_counter, url=url)
    return connection_per_worker([url], WORKERS, serving, "counter served", USER)


async def serves_counter(http: aiohttp.ClientSession, url: str) -> bool:
    listing = await post(http, url, None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    return "own__counter" in {tool["name"] for tool in listing["result"]["tools"]}


def headers(session: str | None) -> dict[str, str]:
    sent = {"Accept": ACCEPT_BOTH, "MCP-Protocol-Version": VERSION}
    if session is not None:
        sent["Mcp-Session-Id"] = session
    return sent


async def post(http: aiohttp.ClientSession, url: str, session: str | None, message: JSON) -> JSON:
    async with http.post(f"{url}/mcp", json=message, headers=headers(session)) as response:
        assert response.status == 200, await response.text()
        body: JSON = await response.json()
        return body


async def count(http: aiohttp.ClientSession, url: str, session: str) -> int:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "own__counter", "arguments": {}},
    }
    result = (await post(http, url, session, message))["result"]
    assert result["isError"] is False, result
    return int(result["structuredContent"]["count"])


async def upstream_stat(cluster: Cluster, key: str) -> int:
    return int((await cluster.upstream.stats())[key])


# --- the tests -----------------------------------------------------------------------------------


async def test_a_client_sessions_calls_on_both_workers_reach_one_upstream_session(
    cluster: Cluster,
) -> None:
    url = cluster.url
    async with one_connection_per_worker(url) as (first, second):
        # Each worker's shared session opens with its first per-client call: let them.
        warm = await open_session(first, VERSION, f"{url}/mcp", headers(None))
        await asyncio.gather(count(first, url, warm), count(second, url, warm))

        async def both_shared_sessions_listen() -> bool:
            return await upstream_stat(cluster, "open_streams") == WORKERS

        await wait_until(both_shared_sessions_listen, 10.0, "both shared sessions listen")
        session = await open_session(first, VERSION, f"{url}/mcp", headers(None))
        initialised = await upstream_stat(cluster, "initialize")
        # Both workers need the upstream session at once: one opens it, the other adopts it.
        racing = await asyncio.gather(count(first, url, session), count(second, url, session))
        assert sorted(racing) == [1, 2]
        counts = [await count(http, url, session) for http in (first, second) * 3]
        assert counts == [3, 4, 5, 6, 7, 8]
        assert await upstream_stat(cluster, "initialize") == initialised + 1
        # Another client session, through the other worker first, counts on its own.
        other = await open_session(second, VERSION, f"{url}/mcp", headers(None))
        assert [await count(http, url, other) for http in (second, first)] == [1, 2]


async def test_delete_on_either_worker_ends_the_upstream_session_once(cluster: Cluster) -> None:
    url = cluster.url
    async with one_connection_per_worker(url) as (first, second):
        session = await open_session(first, VERSION, f"{url}/mcp", headers(None))
        assert [await count(http, url, session) for http in (first, second)] == [1, 2]
        deleted = await upstream_stat(cluster, "sessions_deleted")
        stray = await upstream_stat(cluster, "unknown_session_deletes")
        async with second.delete(f"{url}/mcp", headers=headers(session)) as response:
            assert response.status == 204

        async def ended() -> bool:
            return await upstream_stat(cluster, "sessions_deleted") == deleted + 1

        await wait_until(ended, 10.0, "the upstream session ended")
        # Both workers held it; exactly one of them ended it.
        await asyncio.sleep(0.5)
        assert await upstream_stat(cluster, "sessions_deleted") == deleted + 1
        assert await upstream_stat(cluster, "unknown_session_deletes") == stray


# --- two instances ---------------------------------------------------------------------------


@pytest.fixture
async def two_instances(
    postgres_url: str, redis_base_url: str, cache_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Deployment, RunningUpstream]]:
    """Two gateways of two workers each, sharing PostgreSQL and Redis, the counting
    upstream registered per-client."""
    upstream = start_own("--counter")
    env = gateway_env(postgres_url, "redis", REDIS_URL=redis_base_url, CACHE_PREFIX=cache_prefix)
    deployment = await start_deployment(env, tmp_path, instances=2, workers=WORKERS)
    try:
        payload = {
            "name": "own",
            "url": upstream.url,
            "transport": "streamable-http",
            "session": "per-client",
        }
        reply = await fetch("POST", f"{deployment.a.url}/upstreams", payload, ADMIN)
        assert reply.status == 201, reply
        yield deployment, upstream
    finally:
        stop_deployment(deployment)
        stop_upstream(upstream)


async def test_a_client_sessions_calls_on_both_instances_reach_one_upstream_session(
    two_instances: tuple[Deployment, RunningUpstream],
) -> None:
    deployment, upstream = two_instances
    a, b = deployment.a.url, deployment.b.url
    async with aiohttp.ClientSession(headers=USER) as http:
        session = await open_session(http, VERSION, f"{a}/mcp", headers(None))
        initialised = int((await upstream.stats())["initialize"])
        # Fresh connections: each call may land on any worker of the instance it goes to.
        counts = []
        for url in (a, b) * 4:
            async with aiohttp.ClientSession(
                headers=USER, connector=aiohttp.TCPConnector(force_close=True)
            ) as fresh:
                counts.append(await count(fresh, url, session))
        # One upstream session counted all eight, whichever instance and worker served them.
        assert counts == list(range(1, 9))
        # Besides it, at most each worker's own shared session (opened with its first call).
        assert int((await upstream.stats())["initialize"]) <= initialised + 1 + 2 * WORKERS
