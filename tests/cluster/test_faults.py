"""Faults with real processes: Redis stopped and started again under a running gateway, the
gateway's PostgreSQL connections cut, and a cache that cannot be reached at start-up.

Redis here is a server of the test's own, on a free port, so stopping it disturbs nothing
else; PostgreSQL is shared, so only the gateway's own connections are ended.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster.deployment import (
    METHOD_NOT_FOUND,
    RATE_LIMITED,
    Deployment,
    Reply,
    burst,
    call_tool,
    children_of,
    fetch,
    first_success,
    gateway_env,
    inside_one_rate_window,
    patch_tool,
    register,
    start_deployment,
    stop_deployment,
    terminate_database_connections,
    wait_for_catalogue_listeners,
    wait_until,
)
from tests.conftest import free_port, unavailable
from tests.support.gunicorn_process import REPO, USER
from tests.upstreams.processes import RunningUpstream, end_process

pytestmark = pytest.mark.timeout(240)

CACHED = "own__echo"
PLAIN = "own__add"
TOOL_TIMEOUT = 5.0
WELL_BEFORE_TIMEOUT = 3.0


class RedisServer:
    """`redis-server` without persistence on a loopback port, stopped and started at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        with (self.workdir / f"redis-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            end_process(self.process, 10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server", "the program is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_gateway(
    own_redis: RedisServer,
    sqlite_url: str,
    cache_prefix: str,
    own_upstream: RunningUpstream,
    tmp_path: Path,
) -> AsyncIterator[Deployment]:
    """One instance of 2 workers on our Redis, with `own__echo` cached and rate limited."""
    env = gateway_env(
        sqlite_url,
        "redis",
        REDIS_URL=own_redis.url,
        CACHE_PREFIX=cache_prefix,
        CATALOGUE_POLL_INTERVAL="30",
        TOOL_TIMEOUT=f"{TOOL_TIMEOUT:g}",
    )
    deployment = await start_deployment(env, tmp_path, instances=1, workers=2)
    try:
        await wait_for_catalogue_listeners("redis", env, 2)
        before = await deployment.catalogue_version()
        await register(deployment.a.url, own_upstream.url)
        await patch_tool(deployment.a.url, CACHED, cache_ttl=60, rate_limit=3)
        await deployment.catalogue_version(newer_than=before)
        yield deployment
    finally:
        stop_deployment(deployment)


async def timed(url: str, tool: str, arguments: dict[str, object]) -> tuple[Reply, float]:
    started = time.perf_counter()
    reply = await call_tool(url, tool, arguments)
    return reply, time.perf_counter() - started


async def readiness(url: str, calls: int = 6) -> list[Reply]:
    """`/ready` on fresh connections, so that every worker is likely asked; with a token,
    so that it names what fails."""
    return await burst(fetch("GET", f"{url}/ready", headers=USER, timeout=5) for _ in range(calls))


async def test_redis_outage_degrades_calls_and_readiness_until_redis_returns(
    redis_gateway: Deployment, own_redis: RedisServer, cache_prefix: str, sqlite_url: str
) -> None:
    url = redis_gateway.a.url
    assert {reply.status for reply in await readiness(url)} == {200}

    own_redis.stop()

    for reply in await readiness(url):
        assert reply.status == 503, reply
        assert "cache" in reply.body["failing"], reply
        assert "redis" in reply.body["failing"]["cache"].lower(), reply
    # More calls than the limit of 3 all pass: the limit fails open, the cache misses.
    cached = [await timed(url, CACHED, {"text": "while redis is down"}) for _ in range(4)]
    cached += await burst(timed(url, CACHED, {"text": f"down {i}"}) for i in range(6))
    for reply, seconds in cached:
        assert reply.ok and reply.cache_outcome == "miss", reply
        assert seconds < WELL_BEFORE_TIMEOUT, f"a call took {seconds:.2f}s without Redis"
    plain = await burst(timed(url, PLAIN, {"a": i, "b": 1}) for i in range(10))
    for i, (reply, seconds) in enumerate(plain):
        assert reply.ok and reply.body["result"]["structuredContent"] == {"sum": i + 1}, reply
        assert seconds < WELL_BEFORE_TIMEOUT

    own_redis.start()
    restarted = time.perf_counter()

    async def ready_again() -> bool:
        return {reply.status for reply in await readiness(url)} == {200}

    ready_after = await wait_until(ready_again, 5.0, "/ready answers 200 once Redis is back")
    env = {"REDIS_URL": own_redis.url, "CACHE_PREFIX": cache_prefix, "DATABASE_URL": sqlite_url}
    # Each subscription reconnects with a backoff of its own, at most 5 s apart.
    await wait_for_catalogue_listeners("redis", env, 2, within=15.0)
    listening_after = time.perf_counter() - restarted

    await inside_one_rate_window(needed=5.0)
    miss = await call_tool(url, CACHED, {"text": "after the outage"})
    hit = await call_tool(url, CACHED, {"text": "after the outage"})
    assert (miss.cache_outcome, hit.cache_outcome) == ("miss", "hit"), (miss, hit)
    third = await call_tool(url, CACHED, {"text": "third"})
    fourth = await call_tool(url, CACHED, {"text": "fourth"})
    assert third.ok, third
    assert (fourth.status, fourth.error_code) == (429, RATE_LIMITED), fourth

    await patch_tool(url, PLAIN, enabled=False)
    disabled = time.perf_counter()

    async def refused() -> bool:
        return (await call_tool(url, PLAIN, {"a": 1, "b": 2})).error_code == METHOD_NOT_FOUND

    latency = await first_success(refused, disabled, give_up_after=10.0)

    async def refused_by_every_worker() -> bool:
        replies = await burst(call_tool(url, PLAIN, {"a": i, "b": 2}) for i in range(12))
        return {reply.error_code for reply in replies} == {METHOD_NOT_FOUND}

    # A generous bound: the push carries it at once, and a loaded machine must not fail this.
    await wait_until(refused_by_every_worker, 5.0, "every worker refuses the disabled tool")
    print(
        f"\n[redis outage] after the restart: /ready 200 in {ready_after * 1000:.0f} ms, both "
        f"workers subscribed again in {listening_after * 1000:.0f} ms; a tool disabled then "
        f"was refused after {latency * 1000:.1f} ms"
    )


async def test_cut_postgres_connections_are_replaced_without_failing_a_call(
    postgres_url: str, cache_prefix: str, own_upstream: RunningUpstream, tmp_path: Path
) -> None:
    env = gateway_env(
        postgres_url, "database", CACHE_PREFIX=cache_prefix, CATALOGUE_POLL_INTERVAL="30"
    )
    deployment = await start_deployment(env, tmp_path, instances=1, workers=2)
    try:
        url = deployment.a.url
        await wait_for_catalogue_listeners("database", env, 2)
        version = await deployment.catalogue_version()
        await register(url, own_upstream.url)
        # Calls of a cached, rate-limited tool use the store on every call (database cache).
        await patch_tool(url, CACHED, cache_ttl=60, rate_limit=100_000)
        await deployment.catalogue_version(newer_than=version)
        warm = await burst(call_tool(url, CACHED, {"text": f"warm {i}"}) for i in range(12))
        assert all(reply.ok for reply in warm), warm[:3]

        async def stream(calls: int = 150, every: float = 0.02) -> list[Reply]:
            started = time.perf_counter()
            tasks = []
            for i in range(calls):
                tool, arguments = (
                    (CACHED, {"text": f"stream {i % 7}"}) if i % 2 else (PLAIN, {"a": i, "b": 1})
                )
                tasks.append(asyncio.create_task(call_tool(url, tool, arguments)))
                await asyncio.sleep(max(0.0, started + (i + 1) * every - time.perf_counter()))
            return list(await asyncio.gather(*tasks))

        streaming = asyncio.create_task(stream())
        await asyncio.sleep(0.5)
        workers = deployment.a.worker_pids()
        ended = await asyncio.to_thread(terminate_database_connections, postgres_url, workers)
        cut = time.perf_counter()
        # At least the pool and the LISTEN connection of each worker.
        assert ended >= 2 * len(workers), ended

        seen: set[int] = set()

        async def ready() -> bool:
            statuses = {reply.status for reply in await readiness(url)}
            seen.update(statuses)
            return statuses == {200}

        recovered = await wait_until(ready, 10.0, "/ready answers 200 after the cut")
        await wait_for_catalogue_listeners("database", env, 2, within=15.0)
        listening = time.perf_counter() - cut
        replies = await streaming
        failed = [(i, reply) for i, reply in enumerate(replies) if not reply.ok]
        assert not failed, failed[:5]

        await patch_tool(url, CACHED, enabled=False)
        disabled = time.perf_counter()
        refusal = await first_success(lambda: refused_call(url), disabled, give_up_after=5.0)
        await asyncio.sleep(max(0.0, disabled + 1.0 - time.perf_counter()))
        after = await burst(call_tool(url, CACHED, {"text": f"off {i}"}) for i in range(12))
        assert {reply.error_code for reply in after} == {METHOD_NOT_FOUND}, after[:3]
        print(
            f"\n[postgres cut] {ended} connections ended; /ready answered {sorted(seen)}, "
            f"200 after {recovered * 1000:.0f} ms; both workers listen again "
            f"{listening * 1000:.0f} ms after the cut; {len(replies)} calls meanwhile all "
            f"succeeded; a tool disabled then was refused after {refusal * 1000:.1f} ms"
        )
    finally:
        stop_deployment(deployment)


async def refused_call(url: str) -> bool:
    reply = await call_tool(url, CACHED, {"text": "still on?"})
    return reply.error_code == METHOD_NOT_FOUND


def test_unreachable_redis_at_start_up_stops_gunicorn_with_one_line_naming_redis_url(
    database_url: str, tmp_path: Path
) -> None:
    closed_port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "GUNICORN_WORKERS": "1",
        "LOG_FORMAT": "json",
        **gateway_env(database_url, "redis", REDIS_URL=f"redis://127.0.0.1:{closed_port}/0"),
    }
    output = tmp_path / "gunicorn.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = time.monotonic()
    try:
        returncode = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        workers = children_of(process.pid)
        # Workers included: a hung worker would otherwise outlive the test.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(
            f"gunicorn did not exit within 15 s of an unreachable REDIS_URL; workers "
            f"{workers} were still running. Its output:\n"
            + output.read_text(errors="replace")[-3000:]
        )
    text = output.read_text(errors="replace")
    assert returncode != 0, text
    assert time.monotonic() - started < 15
    naming = [line for line in text.splitlines() if "REDIS_URL" in line]
    assert len(naming) == 1, text
    assert f"127.0.0.1:{closed_port}" in naming[0]
    assert "Traceback" not in text
