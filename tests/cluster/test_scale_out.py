"""Scale-out with real processes: gunicorn instances sharing one store and one cache.

The same tests run on each variant:
- `redis-postgres`: two instances of 2 workers, Redis cache, PostgreSQL store;
- `database-postgres`: the same with the database cache (NOTIFY carries the pushes);
- `database-sqlite`: one instance of 3 workers on one SQLite file, where "A" and "B" are
  the same instance and fresh connections spread the calls over its workers.
Losing a machine needs two instances; leader failover is shown on Redis.

`CATALOGUE_POLL_INTERVAL` is 30 s everywhere, so only the cache's push can explain a change
reaching another worker within `PUSH_BOUND`. Measured latencies are printed (`pytest -s`
shows them) but not asserted: a loaded machine must not fail the suite.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.deployment import (
    METHOD_NOT_FOUND,
    RATE_LIMITED,
    Deployment,
    Reply,
    alive,
    burst,
    call_tool,
    fetch,
    first_success,
    gateway_env,
    inside_one_rate_window,
    patch_tool,
    register,
    start_deployment,
    stop_deployment,
    upstream_tool_calls,
    wait_for_catalogue_listeners,
)
from tests.upstreams.processes import RunningUpstream

pytestmark = pytest.mark.timeout(240)

TOOL = "own__echo"
POLL_INTERVAL = "30"
PUSH_BOUND = 5.0
"""Seconds from a write's response until every worker serves it: generous for a loaded
machine, yet far below `POLL_INTERVAL`, so only the cache's push can meet it."""


@dataclass(frozen=True)
class Variant:
    id: str
    cache_type: str
    store_fixture: str
    instances: int
    workers: int


REDIS_POSTGRES = Variant("redis-postgres", "redis", "postgres_url", 2, 2)
DATABASE_POSTGRES = Variant("database-postgres", "database", "postgres_url", 2, 2)
DATABASE_SQLITE = Variant("database-sqlite", "database", "sqlite_url", 1, 3)
VARIANTS = [REDIS_POSTGRES, DATABASE_POSTGRES, DATABASE_SQLITE]
SEVERAL_INSTANCES = [v for v in VARIANTS if v.instances > 1]


def ids(variant: Variant) -> str:
    return variant.id


@pytest.fixture(params=VARIANTS, ids=ids)
def variant(request: pytest.FixtureRequest) -> Variant:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def env(variant: Variant, request: pytest.FixtureRequest, cache_prefix: str) -> dict[str, str]:
    extra = {"CACHE_PREFIX": cache_prefix, "CATALOGUE_POLL_INTERVAL": POLL_INTERVAL}
    if variant.cache_type == "redis":
        extra["REDIS_URL"] = request.getfixturevalue("redis_base_url")
    return gateway_env(request.getfixturevalue(variant.store_fixture), variant.cache_type, **extra)


async def deploy(variant: Variant, env: dict[str, str], workdir: Path) -> Deployment:
    deployment = await start_deployment(env, workdir, variant.instances, variant.workers)
    try:
        await wait_for_catalogue_listeners(
            variant.cache_type, env, variant.instances * variant.workers
        )
    except BaseException:
        stop_deployment(deployment)
        raise
    return deployment


@pytest.fixture
async def deployment(
    variant: Variant, env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Deployment]:
    running = await deploy(variant, env, tmp_path)
    yield running
    stop_deployment(running)


def report(variant: Variant, what: str, seconds: float) -> None:
    print(f"\n[{variant.id}] {what}: {seconds * 1000:.1f} ms")


def echo(text: str) -> dict[str, Any]:
    return {"text": text}


async def registered(deployment: Deployment, upstream: RunningUpstream) -> int:
    """Register the upstream through A; return the catalogue version every worker serves."""
    before = await deployment.catalogue_version()
    await register(deployment.a.url, upstream.url)
    return await deployment.catalogue_version(newer_than=before)


async def everywhere(
    variant: Variant, since: float, url: str, check: Callable[[Reply], bool], what: str
) -> None:
    """Within `PUSH_BOUND` of `since`, 20 calls side by side through `url`, each on a
    connection of its own, for which `check` holds for every reply."""
    failing: list[Reply] = []

    async def all_see_it() -> bool:
        nonlocal failing
        replies = await burst(call_tool(url, TOOL, echo(f"{what} {i}")) for i in range(20))
        failing = [reply for reply in replies if not check(reply)]
        return not failing

    try:
        seconds = await first_success(all_see_it, since, give_up_after=PUSH_BOUND, every=0.1)
    except AssertionError:
        raise AssertionError(f"{what}: not seen by every worker: {failing[:3]}") from None
    report(variant, f"{what}: a burst of 20 all saw it after", seconds)


def refused(reply: Reply) -> bool:
    return reply.status == 200 and reply.error_code == METHOD_NOT_FOUND


def succeeded(reply: Reply) -> bool:
    return reply.ok


async def propagation(
    variant: Variant,
    write: Awaitable[Reply],
    url: str,
    check: Callable[[Reply], bool],
    what: str,
) -> None:
    """Make `write`, then call the tool through `url` every 10 ms until `check` holds; then
    a burst over every worker of `url` must see it too, all within `PUSH_BOUND`."""
    await write
    answered = time.perf_counter()

    async def seen() -> bool:
        return check(await call_tool(url, TOOL, echo(what)))

    latency = await first_success(seen, answered, give_up_after=PUSH_BOUND)
    report(variant, f"{what}: first call that sees it", latency)
    await everywhere(variant, answered, url, check, what)


async def test_catalogue_changes_through_one_instance_reach_every_worker_of_the_other(
    variant: Variant, deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    a, b = deployment.a.url, deployment.b.url
    before = await deployment.catalogue_version()
    assert not (await call_tool(b, TOOL, echo("too early"))).ok

    # Registered through A, served through B; disabled through B, refused through A;
    # enabled through A, served through B.
    await propagation(variant, register(a, own_upstream.url), b, succeeded, "registered")
    await propagation(variant, patch_tool(b, TOOL, enabled=False), a, refused, "disabled")
    await propagation(variant, patch_tool(a, TOOL, enabled=True), b, succeeded, "enabled")
    await deployment.catalogue_version(newer_than=before)


async def test_result_cached_through_one_instance_is_a_hit_on_every_worker_without_the_upstream(
    variant: Variant, deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    version = await registered(deployment, own_upstream)
    await patch_tool(deployment.b.url, TOOL, cache_ttl=60)
    await deployment.catalogue_version(newer_than=version)
    arguments = echo("cache me")

    first = await call_tool(deployment.a.url, TOOL, arguments)
    assert first.ok and first.cache_outcome == "miss", first
    upstream_calls = await upstream_tool_calls(own_upstream.base_url)

    second = await call_tool(deployment.b.url, TOOL, arguments)
    assert second.ok and second.cache_outcome == "hit", second
    assert second.body["result"]["structuredContent"] == arguments
    later = await burst(
        call_tool(instance.url, TOOL, arguments)
        for instance in deployment.instances
        for _ in range(24 // len(deployment.instances))
    )
    assert [reply.cache_outcome for reply in later] == ["hit"] * len(later), later[:3]
    assert await upstream_tool_calls(own_upstream.base_url) == upstream_calls


async def test_tool_rate_limit_holds_across_instances_and_workers(
    variant: Variant, deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    limit = 10
    version = await registered(deployment, own_upstream)
    await patch_tool(deployment.b.url, TOOL, rate_limit=limit)
    await deployment.catalogue_version(newer_than=version)
    await inside_one_rate_window(needed=5.0)

    instances = deployment.instances
    replies = await burst(
        call_tool(instances[i % len(instances)].url, TOOL, echo(f"limited {i}"))
        for i in range(2 * limit)
    )

    allowed = [reply for reply in replies if reply.ok]
    limited = [
        reply for reply in replies if reply.status == 429 and reply.error_code == RATE_LIMITED
    ]
    assert (len(allowed), len(limited)) == (limit, limit), replies
    for reply in limited:
        assert int(reply.headers["Retry-After"]) >= 1
        assert reply.body["error"]["data"]["limit"] == limit


@pytest.mark.parametrize("variant", SEVERAL_INSTANCES, ids=ids, indirect=True)
async def test_surviving_instance_serves_every_call_while_the_other_machine_dies(
    variant: Variant, deployment: Deployment, own_upstream: RunningUpstream
) -> None:
    await registered(deployment, own_upstream)
    warm = await burst(call_tool(deployment.b.url, TOOL, echo(f"warm {i}")) for i in range(8))
    assert all(reply.ok for reply in warm), warm
    calls, every, kill_after = 200, 0.01, 0.5

    async def stream() -> list[Reply]:
        started = time.perf_counter()
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.create_task(call_tool(deployment.b.url, TOOL, echo(f"s{i}"))))
            await asyncio.sleep(max(0.0, started + (i + 1) * every - time.perf_counter()))
        return list(await asyncio.gather(*tasks))

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(kill_after)
    master = deployment.a.master_pid
    workers = await asyncio.to_thread(deployment.a.kill_machine)
    replies = await streaming

    failed = [(i, reply) for i, reply in enumerate(replies) if not reply.ok]
    assert not failed, failed[:5]
    assert not [pid for pid in (master, *workers) if alive(pid)]
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch("GET", f"{deployment.a.url}/health", timeout=2)


@pytest.mark.parametrize("variant", [REDIS_POSTGRES], ids=ids, indirect=True)
async def test_exactly_one_worker_of_all_instances_leads_and_another_takes_over_within_leader_ttl(
    variant: Variant, env: dict[str, str], tmp_path: Path
) -> None:
    ttl = 2.0
    # One renewal period (a third of the TTL) for the next campaign, plus sampling time.
    margin = ttl / 3 + 0.5
    deployment = await deploy(variant, {**env, "LEADER_TTL": f"{ttl:g}"}, tmp_path)
    try:
        views = await deployment.views()
        assert len(views) == variant.instances * variant.workers
        leaders = [pid for pid, view in views.items() if view["leader"]]
        assert len(leaders) == 1, views
        dead = leaders[0]
        survivors = set(views) - {dead}

        os.kill(dead, signal.SIGKILL)
        killed = time.perf_counter()

        async def one_leader_among_the_living() -> bool:
            seen: dict[int, dict[str, Any]] = {}
            for _ in range(3):
                replies = await burst(
                    fetch("GET", f"{instance.url}/version", timeout=2)
                    for instance in deployment.instances
                    for _ in range(6)
                )
                seen.update({r.body["worker"]: r.body for r in replies if r.status == 200})
            return survivors <= set(seen) and sum(v["leader"] for v in seen.values()) == 1

        took = await first_success(one_leader_among_the_living, killed, give_up_after=ttl + 10)
        report(variant, "leader killed, one leader again after", took)
        assert took <= ttl + margin

        respawned = await deployment.views(exclude={dead})
        assert len(respawned) == variant.instances * variant.workers
        assert sum(view["leader"] for view in respawned.values()) == 1, respawned
    finally:
        stop_deployment(deployment)
