"""What an upstream says on its own reaches the clients of a gateway with two gunicorn
workers sharing Redis: every worker listens to the upstream from the start (before any
call), one of them re-discovers it after its `list_changed`, and the client hears the
gateway's `list_changed` on its GET stream whichever worker holds it."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ResourceUpdatedNotification,
    ToolListChangedNotification,
)

from tests.cluster.test_mcp_cluster import WORKERS, both_workers_serve
from tests.conftest import free_port
from tests.support.gunicorn_process import GunicornGateway, gunicorn_env, register_upstream
from tests.support.sdk import sdk_client
from tests.upstreams.fixtures import eventually
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream

pytestmark = pytest.mark.timeout(120)

# The gateway's promise is about 2 s; the margin is for a machine busy with other tests.
WITHIN = 6.0


@pytest.fixture(scope="module")
def deployment(
    redis_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GunicornGateway, RunningUpstream]]:
    workdir: Path = tmp_path_factory.mktemp("upstream-notifications")
    env = gunicorn_env(
        f"sqlite:///{workdir / 'gateway.db'}",
        CACHE_TYPE="redis",
        REDIS_URL=redis_base_url,
        CACHE_PREFIX=f"test-{uuid.uuid4().hex[:10]}",
    )
    upstream = start_own()
    gateway = GunicornGateway(env, free_port(), workdir, workers=WORKERS)
    try:
        gateway.start()
        register_upstream(gateway.url, upstream)
        asyncio.run(both_workers_serve(gateway.url, "own__echo"))
        yield gateway, upstream
    finally:
        gateway.stop()
        stop_upstream(upstream)


class Heard:
    """The notifications a client received, by type."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def __call__(self, message: object) -> None:
        self.seen.append(message)

    async def one(self, kind: type, since: int = 0) -> object:
        deadline = time.monotonic() + WITHIN
        while time.monotonic() < deadline:
            for message in self.seen[since:]:
                if isinstance(message, kind):
                    return message
            await asyncio.sleep(0.02)
        pytest.fail(f"no {kind.__name__} within {WITHIN:g}s")


async def every_worker_tells(upstream: RunningUpstream, path: str) -> None:
    """Send from the upstream once both workers listen to it (`notified` counts them)."""

    async def sent() -> bool:
        return int((await upstream.admin("POST", path))["notified"]) >= WORKERS

    await eventually(sent, timeout=20.0, what=f"both workers listening ({path})")


async def settled(upstream: RunningUpstream) -> int:
    """The upstream's `initialize` count once re-discoveries (each opens a session of its
    own) have stopped."""
    last = -1
    while (now := int((await upstream.stats())["initialize"])) != last:
        last = now
        await asyncio.sleep(1.5)
    return last


def lists(check: Callable[[], Awaitable[list[str]]], name: str) -> Callable[[], Awaitable[bool]]:
    async def listed() -> bool:
        return name in await check()

    return listed


async def test_an_upstreams_tools_list_changed_reaches_the_client_and_is_re_discovered_once(
    deployment: tuple[GunicornGateway, RunningUpstream],
) -> None:
    gateway, upstream = deployment
    heard = Heard()
    async with sdk_client(
        f"{gateway.url}/mcp", "legacy", fresh_connections=True, message_handler=heard
    ) as client:
        # Nobody called the upstream: both workers listen all the same.
        await every_worker_tells(upstream, "/admin/list-changed?kind=tools")
        before = await settled(upstream)
        mark = len(heard.seen)
        await upstream.admin("POST", "/admin/add-tool?name=late")
        told = await upstream.admin("POST", "/admin/list-changed?kind=tools")
        assert told["notified"] == WORKERS
        started = time.monotonic()
        await heard.one(ToolListChangedNotification, mark)
        assert time.monotonic() - started < WITHIN

        async def tools() -> list[str]:
            return [tool.name for tool in (await client.list_tools()).tools]

        await eventually(lists(tools, "own__late"), timeout=5.0, what="own__late listed")
        # Both workers heard the note; one of them re-discovered the upstream.
        assert await settled(upstream) - before == 1


async def test_an_upstreams_prompts_resources_and_resource_updates_reach_the_client(
    deployment: tuple[GunicornGateway, RunningUpstream],
) -> None:
    gateway, upstream = deployment
    heard = Heard()
    async with sdk_client(
        f"{gateway.url}/mcp", "legacy", fresh_connections=True, message_handler=heard
    ) as client:
        await every_worker_tells(upstream, "/admin/list-changed?kind=prompts")
        mark = len(heard.seen)
        await upstream.admin("POST", "/admin/add-prompt?name=late")
        await upstream.admin("POST", "/admin/list-changed?kind=prompts")
        await heard.one(PromptListChangedNotification, mark)

        async def prompts() -> list[str]:
            return [prompt.name for prompt in (await client.list_prompts()).prompts]

        await eventually(lists(prompts, "own__late"), timeout=5.0, what="prompt listed")
        mark = len(heard.seen)
        await upstream.admin("POST", "/admin/add-resource?uri=memo://late")
        await upstream.admin("POST", "/admin/list-changed?kind=resources")
        await heard.one(ResourceListChangedNotification, mark)

        async def resources() -> list[str]:
            return [str(r.uri) for r in (await client.list_resources()).resources]

        await eventually(lists(resources, "memo://late"), timeout=5.0, what="resource listed")
        with warnings.catch_warnings():
            # Handshake-era subscriptions, which the SDK marks deprecated as of 2026-07-28.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource("memo://one")
        mark = len(heard.seen)
        told = await upstream.admin("POST", "/admin/update-resource?uri=memo://one")
        assert told["notified"] >= 1
        updated = await heard.one(ResourceUpdatedNotification, mark)
        assert isinstance(updated, ResourceUpdatedNotification)
        assert str(updated.params.uri) == "memo://one"
