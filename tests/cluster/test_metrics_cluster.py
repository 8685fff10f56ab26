"""Metrics across gunicorn workers with no setting: a known number of requests of known kinds
through 4 workers, and every scrape, whichever worker answers it, adds them up exactly once
the workers have flushed (each does every `SAMPLE_INTERVAL`); a worker killed with SIGKILL
keeps its counts in the totals while its files are retired, and the directory the gateway
made goes when it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics_sampler import SAMPLE_INTERVAL
from tests.cluster.deployment import children_of
from tests.support.gunicorn_process import (
    ADMIN,
    REPO,
    USER,
    GunicornGateway,
    StartGunicorn,
    gunicorn_env,
    register_upstream,
)
from tests.support.waiting import eventually
from tests.upstreams.processes import RunningUpstream

pytestmark = pytest.mark.timeout(180)

WORKERS = 4
FLUSHED = SAMPLE_INTERVAL * 2
"""Long enough for every worker to have flushed what it counted."""
Series = tuple[str, tuple[tuple[str, str], ...]]


def series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))


async def send(
    url: str, method: str, path: str, headers: dict[str, str], json: object = None
) -> int:
    """One request on a fresh connection, so gunicorn may hand it to any worker."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request(method, f"{url}{path}", json=json, headers=headers) as reply:
            await reply.read()
            return reply.status


def rpc(method: str, params: object = None) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}


async def scrape(url: str) -> dict[Series, float]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{url}/metrics", headers=ADMIN) as reply:
            assert reply.status == 200
            text = await reply.text()
    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[series(sample.name, **sample.labels)] = sample.value
    return found


def delta(after: dict[Series, float], before: dict[Series, float]) -> dict[Series, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def http(route: str, method: str, status: int) -> Series:
    return series("gateway_http_requests_total", route=route, method=method, status=str(status))


# What the traffic below must add, exactly.
EXPECTED: dict[Series, float] = {
    http("/health", "GET", 200): 24,
    http("/rpc", "POST", 200): 16,  # 12 tool calls and 4 unknown methods
    http("/upstreams/{name}", "GET", 404): 6,
    http("unmatched", "GET", 404): 5,
    http("/rpc", "POST", 401): 3,
    series("gateway_http_request_duration_seconds_count", route="/health", method="GET"): 24,
    series("gateway_mcp_requests_total", method="tools/call", outcome="ok"): 12,
    series("gateway_mcp_requests_total", method="other", outcome="error"): 4,
    series("gateway_tool_calls_total", upstream="own", tool="own__echo", outcome="ok"): 12,
    series("gateway_tool_call_duration_seconds_count", upstream="own"): 12,
}


async def traffic(url: str) -> None:
    calls = [send(url, "GET", "/health", {}) for _ in range(24)]
    echo = rpc("tools/call", {"name": "own__echo", "arguments": {"text": "hi"}})
    calls += [send(url, "POST", "/rpc", USER, echo) for _ in range(12)]
    calls += [send(url, "POST", "/rpc", USER, rpc("no/such/method")) for _ in range(4)]
    calls += [send(url, "GET", f"/upstreams/missing-{n}", ADMIN) for n in range(6)]
    calls += [send(url, "GET", f"/no/such/path/{n}", ADMIN) for n in range(5)]
    calls += [send(url, "POST", "/rpc", {}, echo) for _ in range(3)]
    statuses = await asyncio.gather(*calls)
    assert sorted(statuses) == sorted([200] * 40 + [404] * 11 + [401] * 3)


def pids_with_files(directory: Path, prefix: str) -> set[int]:
    return {
        int(name.rsplit("_", 1)[1].removesuffix(".db"))
        for name in os.listdir(directory)
        if name.startswith(prefix) and name.rsplit("_", 1)[1].removesuffix(".db").isdigit()
    }


def checked(found: dict[Series, float], keys: Iterable[Series]) -> dict[Series, float]:
    return {key: found.get(key, 0.0) for key in keys}


async def test_counters_add_up_exactly_across_4_workers_and_survive_a_killed_worker(
    gunicorn: StartGunicorn, sqlite_url: str, own_upstream: RunningUpstream, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = gunicorn_env(sqlite_url, CACHE_TYPE="database", TMPDIR=str(scratch))
    gateway: GunicornGateway = gunicorn(env, workers=WORKERS)
    [directory] = [scratch / name for name in os.listdir(scratch)]
    assert directory.name.startswith("aio-mcp-gateway-metrics-")
    assert directory.stat().st_mode & 0o777 == 0o700
    register_upstream(gateway.url, own_upstream)
    await asyncio.sleep(FLUSHED)  # every worker has the new upstream and flushed

    before = await scrape(gateway.url)
    await traffic(gateway.url)
    scrapes = []
    for _ in range(6):
        await asyncio.sleep(FLUSHED)
        scrapes.append(await scrape(gateway.url))
    for found in scrapes:
        assert checked(delta(found, before), EXPECTED) == EXPECTED
    # Each scrape counted the ones before it, whichever worker answered it.
    metrics_route = http("/metrics", "GET", 200)
    assert [found[metrics_route] - before.get(metrics_route, 0) for found in scrapes] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    counting = pids_with_files(directory, "counter_")
    assert len(counting) >= 2, counting  # the requests were spread over workers
    assert scrapes[-1][series("gateway_catalogue_tools")] >= 5

    master = gateway.process.pid  # type: ignore[union-attr]
    victim = next(pid for pid in children_of(master) if pid in counting)
    assert victim in pids_with_files(directory, "gauge_livesum_")
    os.kill(victim, signal.SIGKILL)

    def retired() -> bool:
        alive = children_of(master)
        return (
            victim not in alive
            and len(alive) == WORKERS
            and victim not in pids_with_files(directory, "counter_")
            and victim not in pids_with_files(directory, "gauge_")
        )

    what = "the killed worker replaced and its files retired"
    await eventually(retired, 30.0, what, every=0.2)
    assert (directory / "counter_archive.db").exists()
    for _ in range(4):
        found = await scrape(gateway.url)
        assert checked(delta(found, before), EXPECTED) == EXPECTED

    gateway.stop()
    assert not directory.exists()


async def test_an_operators_multiprocess_directory_is_used_and_left_in_place(
    gunicorn: StartGunicorn, sqlite_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = gunicorn_env(sqlite_url, PROMETHEUS_MULTIPROC_DIR=str(directory))
    gateway: GunicornGateway = gunicorn(env, workers=2)
    before = await scrape(gateway.url)
    for _ in range(5):
        assert await send(gateway.url, "GET", "/health", {}) == 200
    await asyncio.sleep(FLUSHED)
    after = await scrape(gateway.url)
    assert delta(after, before)[http("/health", "GET", 200)] == 5
    assert pids_with_files(directory, "counter_")
    gateway.stop()
    assert directory.exists() and any(directory.iterdir())


def test_an_operators_directory_that_does_not_exist_stops_the_start_with_one_line(
    sqlite_url: str, tmp_path: Path
) -> None:
    absent = tmp_path / "absent"
    env = {**os.environ, **gunicorn_env(sqlite_url, PROMETHEUS_MULTIPROC_DIR=str(absent))}
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        f"aio-mcp-gateway: configuration error: PROMETHEUS_MULTIPROC_DIR={absent} "
        "is not a directory"
    ]
