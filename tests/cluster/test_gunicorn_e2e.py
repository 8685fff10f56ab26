"""The gateway end to end under gunicorn with 2 workers, as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.cluster.deployment import worker_views
from tests.conftest import TEST_SECRET, free_port
from tests.support.gunicorn_process import (
    ADMIN,
    REPO,
    USER,
    GunicornGateway,
    StartGunicorn,
    gunicorn_env,
)
from tests.upstreams.processes import RunningUpstream

pytestmark = pytest.mark.timeout(180)


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    return gunicorn_env(database_url, CACHE_TYPE="database", TOOL_TIMEOUT="5", **extra)


async def call(url: str, method: str, params: object, headers: dict[str, str]) -> dict[str, object]:
    """One request on a fresh connection, so gunicorn may hand it to any worker."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with session.post(f"{url}/rpc", json=payload, headers=headers) as response:
            assert response.status == 200, await response.text()
            body: dict[str, object] = orjson.loads(await response.read())
            return body


async def register(url: str, upstream_url: str, name: str = "own") -> dict[str, object]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/upstreams",
            json={
                "name": name,
                "url": upstream_url,
                "transport": "streamable-http",
                "headers": {"X-Secret": "s3cret"},
            },
            headers=ADMIN,
        ) as response:
            body: dict[str, object] = await response.json()
            assert response.status == 201, body
            return body


async def worker_catalogues(url: str) -> dict[int, dict[str, int]]:
    """Each worker's catalogue as `/version` reports it, once every worker has answered."""
    views = await worker_views(url, workers=2, within=30.0)
    return {pid: view["catalogue"] for pid, view in views.items()}


async def check_registration_reaches_every_worker(
    gateway: GunicornGateway, upstream_url: str
) -> None:
    before = await worker_catalogues(gateway.url)
    assert len(before) == 2, before
    view = await register(gateway.url, upstream_url)
    assert view["headers"] == ["X-Secret"]
    assert "s3cret" not in orjson.dumps(view).decode()
    await asyncio.sleep(2.0)
    after = await worker_catalogues(gateway.url)
    assert len(after) == 2
    for pid, catalogue in after.items():
        assert catalogue["tools"] >= before[pid]["tools"] + 5, (pid, catalogue)
    results = await asyncio.gather(
        *(
            call(
                gateway.url,
                "tools/call",
                {"name": "own__echo", "arguments": {"text": f"hi {i}"}},
                USER,
            )
            for i in range(40)
        )
    )
    for i, body in enumerate(results):
        result = body["result"]
        assert isinstance(result, dict) and result["isError"] is False, body
        assert result["structuredContent"] == {"text": f"hi {i}"}


async def test_registration_on_sqlite_is_served_by_both_workers(
    gunicorn: StartGunicorn,
    sqlite_url: str,
    own_upstream: RunningUpstream,
) -> None:
    gateway = gunicorn(base_env(sqlite_url))
    await check_registration_reaches_every_worker(gateway, own_upstream.url)


async def test_registration_on_postgres_is_served_by_both_workers(
    gunicorn: StartGunicorn,
    postgres_url: str,
    own_upstream: RunningUpstream,
) -> None:
    gateway = gunicorn(base_env(postgres_url))
    await check_registration_reaches_every_worker(gateway, own_upstream.url)


async def test_load_test_payload_is_answered_by_the_time_plugin(
    gunicorn: StartGunicorn, sqlite_url: str
) -> None:
    gateway = gunicorn(base_env(sqlite_url))
    payload = orjson.loads((REPO / "tests" / "hey" / "payload.json").read_bytes())
    body = await call(gateway.url, payload["method"], payload["params"], USER)
    result = body["result"]
    assert isinstance(result, dict) and result["isError"] is False
    assert "08:00" in orjson.dumps(result["structuredContent"]).decode()


async def test_stored_jwt_secret_is_shared_by_workers_and_the_token_command(
    gunicorn: StartGunicorn,
    sqlite_url: str,
) -> None:
    env = base_env(sqlite_url)
    del env["JWT_SECRET_KEY"]
    gateway = gunicorn(env)
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "token", "create", "--sub", "ops", "--scope", "admin"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = completed.stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(20):
        body = await call(gateway.url, "ping", {}, headers)
        assert body["result"] == {}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway.url}/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=USER
        ) as response:
            # USER is signed with another secret: the stored one is in force.
            assert response.status == 401


def start_failure(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
        env={
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "GUNICORN_WORKERS": "1",
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_cache_type_stops_start_up_listing_installed_caches(tmp_path: Path) -> None:
    completed = start_failure({"CACHE_TYPE": "nope"}, tmp_path)
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    assert "CACHE_TYPE" in lines[0] and "database" in lines[0] and "memory" in lines[0]


def test_bad_port_stops_start_up_with_one_line(tmp_path: Path) -> None:
    completed = start_failure({"PORT": "not-a-port"}, tmp_path)
    assert completed.returncode != 0
    assert "PORT" in completed.stderr and "Traceback" not in completed.stderr


def test_unreachable_postgres_stops_start_up_without_traceback(tmp_path: Path) -> None:
    completed = start_failure(
        {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/test",
            "JWT_SECRET_KEY": TEST_SECRET,
            "LOG_FORMAT": "json",
        },
        tmp_path,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "DATABASE_URL" in output
    assert "Traceback" not in output


async def test_logs_are_json_lines_with_request_ids(
    gunicorn: StartGunicorn, sqlite_url: str
) -> None:
    gateway = gunicorn(base_env(sqlite_url, GUNICORN_ACCESS_LOG="true"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/health", headers={"X-Request-ID": "trace-me-42"}):
            pass
    await asyncio.sleep(0.5)
    lines = [orjson.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    assert lines, gateway.log()
    assert any(entry.get("request_id") == "trace-me-42" for entry in lines), gateway.log()
    assert all("timestamp" in entry and "level" in entry for entry in lines)
