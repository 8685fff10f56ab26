"""A stdio upstream under gunicorn with 2 workers: calls from both workers reach the one
process the instance's stdio host runs; a SIGKILLed worker takes nothing down and leaves
nothing behind; stopping the gateway, or killing all of it, leaves no process. With
`STDIO_MODE=per-worker` each worker runs a process of its own."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from tests.cluster.deployment import alive, children_of, parent_of
from tests.support.gunicorn_process import ADMIN, StartGunicorn, admin_post, gunicorn_env

SERVER = str(Path(__file__).resolve().parents[1] / "upstreams" / "stdio_server.py")
PYTHON = sys.executable


def call_pid(url: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "own__pid", "arguments": {}},
    }
    # A new connection each time, so the kernel spreads the calls over the workers.
    response = httpx2.post(f"{url}/rpc", json=body, headers=ADMIN, timeout=30.0)
    result: dict[str, Any] = response.json()["result"]
    assert result["isError"] is False, result
    return str(result["content"][0]["text"])


def status(url: str) -> dict[str, Any]:
    response = httpx2.get(f"{url}/upstreams/own", headers=ADMIN, timeout=15.0)
    found: dict[str, Any] = response.json()["status"]
    return found


def until(check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def start(gunicorn: StartGunicorn, tmp_path: Path, **settings: str) -> Any:
    env = gunicorn_env(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        STDIO_COMMANDS=PYTHON,
        STDIO_RUNTIME_DIR=str(tmp_path / "stdio"),
        TOOL_TIMEOUT="30",
        **settings,
    )
    gateway = gunicorn(env, workers=2)
    body = {"name": "own", "transport": "stdio", "command": PYTHON, "args": [SERVER]}
    admin_post(gateway.url, "/upstreams", body)
    return gateway


def test_both_workers_reach_one_process_and_a_killed_worker_leaves_nothing_behind(
    gunicorn: StartGunicorn, tmp_path: Path
) -> None:
    gateway = start(gunicorn, tmp_path)
    pids = {call_pid(gateway.url) for _ in range(30)}
    assert len(pids) == 1
    [server] = [int(pid) for pid in pids]
    # Both workers hold a connection to the one host.
    assert until(lambda: status(gateway.url)["workers"] == 2)
    host = int(status(gateway.url)["host_pid"])
    assert host not in children_of(gateway.process.pid)  # no worker's part

    victim = children_of(gateway.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert until(lambda: not alive(victim), within=10)
    # The host and its process carry on for the other worker and the one gunicorn starts.
    assert {call_pid(gateway.url) for _ in range(10)} == {str(server)}
    assert until(lambda: status(gateway.url)["workers"] == 2)
    assert status(gateway.url)["restarts"] == 0

    gateway.stop()
    assert until(lambda: not alive(server) and not alive(host), within=20)


def test_killing_the_whole_gateway_leaves_no_process(
    gunicorn: StartGunicorn, tmp_path: Path
) -> None:
    gateway = start(gunicorn, tmp_path)
    server = int(call_pid(gateway.url))
    host = int(status(gateway.url)["host_pid"])
    workers = children_of(gateway.process.pid)
    gateway.process.kill()
    gateway.process.wait()
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert until(lambda: not alive(server) and not alive(host), within=20)


def stdio_servers_under(pid: int) -> list[int]:
    return [
        child
        for child in children_of(pid)
        if SERVER in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
    ]


def test_per_worker_mode_gives_each_worker_its_own_process_and_stopping_leaves_none(
    gunicorn: StartGunicorn, tmp_path: Path
) -> None:
    gateway = start(gunicorn, tmp_path, STDIO_MODE="per-worker")
    workers = children_of(gateway.process.pid)
    assert len(workers) == 2
    # Fresh connections until both workers have answered (the kernel picks the worker).
    pids: set[str] = set()
    until(lambda: pids.add(call_pid(gateway.url)) or len(pids) == 2, within=60)
    assert len(pids) == 2, pids
    servers = {int(pid) for pid in pids}
    # Each process is its worker's own child: no host, one process per worker.
    assert {parent_of(pid) for pid in servers} == set(workers)
    assert sorted(pid for worker in workers for pid in stdio_servers_under(worker)) == sorted(
        servers
    )
    assert not (tmp_path / "stdio").exists() or not any((tmp_path / "stdio").iterdir())
    # More calls reuse the two processes.
    assert {int(call_pid(gateway.url)) for _ in range(10)} <= servers

    gateway.stop()
    assert until(lambda: not any(alive(pid) for pid in (*servers, *workers)), within=20)
