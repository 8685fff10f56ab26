"""GATEWAY_CONFIG under gunicorn: a malformed file stops the start with one line before any
worker runs; a good one is applied by one worker of many, a worker started later does not
apply it again, and the next start brings the file's objects back to what it declares."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.cluster.deployment import children_of
from tests.conftest import free_port
from tests.support.gunicorn_process import ADMIN, REPO, GunicornGateway, gunicorn_env
from tests.upstreams.processes import RunningUpstream

APPLIED = "configuration file applied"


def test_a_malformed_file_stops_gunicorn_with_one_line_and_touches_no_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("version: 1\nupstreams:\n  - name: a\n    headers: {X-Key: in-clear}\n")
    database = tmp_path / "gateway.db"
    env = {
        **gunicorn_env(f"sqlite:///{database}"),
        "GATEWAY_CONFIG": str(path),
        "HOST": "127.0.0.1",
        "PORT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"aio-mcp-gateway: configuration error: GATEWAY_CONFIG: {path}:4: the value of header "
        "'X-Key' is written in clear; header values are secrets, so write them as ${ENV_VAR} "
        "references"
    ]
    assert not database.exists()


def test_three_workers_apply_the_file_once_and_the_next_start_undoes_hand_changes(
    tmp_path: Path, postgres_url: str, own_upstream: RunningUpstream
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"upstreams:\n  - name: own\n    url: {own_upstream.url}\n"
        "    headers: {Authorization: 'Bearer ${OWN_TOKEN}'}\n"
        "servers:\n  - id: desk\n    tools: [own__echo]\n"
    )
    env = gunicorn_env(postgres_url, GATEWAY_CONFIG=str(path), OWN_TOKEN="t", LOG_LEVEL="info")
    gateway = GunicornGateway(env, free_port(), tmp_path, workers=3).start()
    try:
        upstreams = httpx2.get(f"{gateway.url}/upstreams", headers=ADMIN, timeout=10).json()
        assert [u["name"] for u in upstreams["upstreams"] if not u["builtin"]] == ["own"]
        server = httpx2.get(f"{gateway.url}/servers/desk", headers=ADMIN, timeout=10)
        assert server.status_code == 200 and server.json()["tools"] == ["own__echo"]
        # A worker gunicorn starts later does not apply the file again, so a change made
        # through the API since stays until the next start.
        changed = httpx2.patch(
            f"{gateway.url}/servers/desk", json={"description": "by hand"}, headers=ADMIN
        )
        assert changed.status_code == 200, changed.text
        assert gateway.process is not None
        workers = children_of(gateway.process.pid)
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (
            set(children_of(gateway.process.pid)) & set(workers) != set(workers[1:])
            or len(children_of(gateway.process.pid)) < 3
        ):
            assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
            time.sleep(0.1)
        for _ in range(6):  # fresh connections: the new worker answers some of them
            server = httpx2.get(f"{gateway.url}/servers/desk", headers=ADMIN, timeout=10)
            assert server.json()["description"] == "by hand"
    finally:
        gateway.stop()
    assert gateway.log_path.read_text().count(APPLIED) == 1
    # The next start applies the file again: the hand-made change is undone, and only that.
    gateway.start()
    try:
        server = httpx2.get(f"{gateway.url}/servers/desk", headers=ADMIN, timeout=10)
        assert server.json()["description"] == ""
    finally:
        gateway.stop()
    log = gateway.log_path.read_text()
    assert log.count(APPLIED) == 2
    assert "~ server desk" in [line for line in log.splitlines() if APPLIED in line][-1]
