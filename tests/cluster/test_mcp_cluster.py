"""MCP sessions spread over gunicorn workers, with the SDK client on the other end.

A gateway with two workers shares sessions, answers and notifications through its cache,
on Redis and on the database cache over PostgreSQL. Every request of the SDK client goes
out on a fresh connection, so gunicorn hands it to either worker, while the client's
stream (the GET stream of /mcp, or the /sse stream) stays on one of them.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import Client
from mcp_types import ToolListChangedNotification

from tests.cluster.deployment import worker_views
from tests.conftest import free_port
from tests.support.gunicorn_process import ADMIN, GunicornGateway, gunicorn_env, register_upstream
from tests.support.sdk import http_client_factory, sdk_client
from tests.upstreams.fixtures import eventually
from tests.upstreams.processes import start_own, stop_upstream

pytestmark = pytest.mark.timeout(90)

REQUESTS = 30
WORKERS = 2


@dataclass(frozen=True)
class Cluster:
    gateway: GunicornGateway

    @property
    def url(self) -> str:
        return self.gateway.url


def variant_env(request: pytest.FixtureRequest, workdir: Path) -> dict[str, str]:
    if request.param == "redis":
        return gunicorn_env(
            f"sqlite:///{workdir / 'gateway.db'}",
            CACHE_TYPE="redis",
            REDIS_URL=str(request.getfixturevalue("redis_base_url")),
            CACHE_PREFIX=f"test-{uuid.uuid4().hex[:10]}",
        )
    return gunicorn_env(str(request.getfixturevalue("module_postgres_url")), CACHE_TYPE="database")


@pytest.fixture(scope="module", params=["redis", "database-postgresql"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two workers sharing a cache, our upstream registered and known to both."""
    workdir = tmp_path_factory.mktemp(str(request.param))
    env = variant_env(request, workdir)
    upstream = start_own()
    gateway = GunicornGateway(env, free_port(), workdir, workers=WORKERS)
    try:
        gateway.start()
        register_upstream(gateway.url, upstream)
        asyncio.run(both_workers_serve(gateway.url, "own__echo"))
        yield Cluster(gateway)
    finally:
        gateway.stop()
        stop_upstream(upstream)


# --- reaching every worker -------------------------------------------------------------------


async def both_workers_serve(url: str, tool: str, within: float = 15.0) -> None:
    """Wait until each worker's catalogue has caught up with the registration."""
    async with asyncio.timeout(within):
        while True:
            views = await worker_views(url, WORKERS)
            # The worker that took the registration reloaded before answering it.
            if len({view["catalogue"]["version"] for view in views.values()}) == 1:
                break
            await asyncio.sleep(0.2)
    async with sdk_client(f"{url}/mcp", "legacy") as client:
        assert tool in {t.name for t in (await client.list_tools()).tools}


@asynccontextmanager
async def pinned_to_each_worker(url: str) -> AsyncIterator[dict[int, aiohttp.ClientSession]]:
    """One keep-alive connection per worker, so an admin change goes through a chosen one."""
    opened: list[aiohttp.ClientSession] = []
    pinned: dict[int, aiohttp.ClientSession] = {}
    try:
        async with asyncio.timeout(10.0):
            while len(pinned) < WORKERS:
                http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                opened.append(http)
                pinned.setdefault(await worker_of(http, url), http)
        yield pinned
    finally:
        for http in opened:
            await http.close()


async def worker_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/version") as response:
        return int((await response.json())["worker"])


async def lists_add(client: Client, enabled: bool) -> bool:
    tools = await client.list_tools()
    return ("own__add" in {tool.name for tool in tools.tools}) is enabled


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_one_session_is_served_by_both_workers(cluster: Cluster, path: str) -> None:
    make = http_client_factory(fresh_connections=True)
    answers: list[Any] = []
    pids: set[int] = set()
    async with (
        sdk_client(cluster.url + path, "legacy", fresh_connections=True) as client,
        make() as probe,
    ):

        async def echo(i: int) -> None:
            result = await client.call_tool("own__echo", {"text": f"call {i}"})
            answers.append((i, result.structured_content))

        async def worker() -> None:
            pids.add(int((await probe.get(f"{cluster.url}/version")).json()["worker"]))

        # Probes sent the same way as the calls and alongside them: once the probes have
        # reached both workers, so have the calls around them.
        while len(answers) < REQUESTS or len(pids) < WORKERS:
            assert len(answers) < 5 * REQUESTS, f"only worker {pids} took requests"
            batch = range(len(answers), len(answers) + 5)
            await asyncio.gather(*(echo(i) for i in batch), worker(), worker())
    assert sorted(answers) == [(i, {"text": f"call {i}"}) for i in range(len(answers))]


async def test_a_tool_change_through_either_worker_reaches_every_client_stream(
    cluster: Cluster,
) -> None:
    heard: dict[str, asyncio.Queue[None]] = {"/mcp": asyncio.Queue(), "/sse": asyncio.Queue()}

    def listener(path: str) -> Callable[[object], Awaitable[None]]:
        async def on_message(message: object) -> None:
            if isinstance(message, ToolListChangedNotification):
                heard[path].put_nowait(None)

        return on_message

    async with (
        sdk_client(f"{cluster.url}/mcp", "legacy", message_handler=listener("/mcp")) as mcp,
        sdk_client(f"{cluster.url}/sse", "legacy", message_handler=listener("/sse")) as sse,
        pinned_to_each_worker(cluster.url) as workers,
    ):
        # Whichever worker holds a stream, one of the two changes came through the other.
        for pid, enabled in zip(workers, (False, True), strict=True):
            http = workers[pid]
            async with http.patch(
                f"{cluster.url}/tools/own__add", json={"enabled": enabled}, headers=ADMIN
            ) as response:
                assert response.status == 200, await response.text()
            assert await worker_of(http, cluster.url) == pid
            for path, queue in heard.items():
                try:
                    await asyncio.wait_for(queue.get(), 10.0)
                except TimeoutError:
                    pytest.fail(f"no tools/list_changed on {path} after a change through {pid}")
            for client in (mcp, sse):
                # The notifying worker may be ahead of the one answering the listing.
                await eventually(
                    functools.partial(lists_add, client, enabled),
                    timeout=5.0,
                    what=f"own__add listed as {'enabled' if enabled else 'disabled'}",
                )
