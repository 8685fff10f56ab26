"""The topology of deploy/compose.yaml without containers: two gunicorn gateways (2 workers
each) on PostgreSQL and Redis, applying deploy/gateway.yaml, behind Debian's nginx running
deploy/nginx.conf (only its addresses and file paths changed for the test), and the
README's load test (`tests/hey.sh`: hey -n 10000 -c 200) through the balancer with no
errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.cluster.deployment import gateway_env
from tests.conftest import RUN_MINUTES, free_port, make_token, unavailable
from tests.support.gateway_process import status_of
from tests.support.gunicorn_process import ADMIN, GunicornGateway, start_together

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def tool(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found is None:
        unavailable(name, f"{name} is not installed (apt-get install {name})")
    assert found is not None
    return found


def nginx_conf(workdir: Path, gateways: list[GunicornGateway], port: int) -> Path:
    """deploy/nginx.conf with the test's addresses and paths, everything else as shipped."""
    text = (DEPLOY / "nginx.conf").read_text()
    for name, gateway in zip(("gateway-1", "gateway-2"), gateways, strict=True):
        text = text.replace(f"server {name}:4444", f"server 127.0.0.1:{gateway.port}")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    temp = "".join(
        f"\n    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {", "http {" + temp, 1)
    assert f"127.0.0.1:{gateways[1].port}" in text and f"127.0.0.1:{port}" in text
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture
def balancer(
    tmp_path: Path, postgres_url: str, redis_base_url: str
) -> Iterator[tuple[str, list[GunicornGateway]]]:
    nginx = tool("nginx")
    env = gateway_env(
        postgres_url,
        "redis",
        REDIS_URL=redis_base_url,
        CACHE_PREFIX=f"test-{uuid.uuid4().hex[:10]}",
        GATEWAY_CONFIG=str(DEPLOY / "gateway.yaml"),
        LOG_LEVEL="warning",
    )
    gateways = [GunicornGateway(env, free_port(), tmp_path, workers=2) for _ in range(2)]
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    port = free_port()
    conf = nginx_conf(workdir, gateways, port)
    main = f"daemon off; pid {workdir / 'nginx.pid'}; error_log {workdir / 'error.log'};"
    if os.geteuid() == 0:
        main += " user root;"  # workers must reach the test's private directory
    process: subprocess.Popen[bytes] | None = None
    error_log = workdir / "error.log"
    try:
        start_together(*gateways)
        process = subprocess.Popen(
            [nginx, "-p", str(workdir), "-c", str(conf), "-g", main],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while status_of(f"{url}/health") != 200:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {error_log.read_text(errors='replace')}")
            assert time.monotonic() < deadline, "nginx did not pass /health within 15 s"
            time.sleep(0.1)
        yield url, gateways
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        for gateway in gateways:
            gateway.stop()


def test_the_readme_load_test_passes_through_nginx_with_no_errors(
    balancer: tuple[str, list[GunicornGateway]],
) -> None:
    url, gateways = balancer
    hey = tool("hey")
    # deploy/gateway.yaml was applied: its virtual server is there, through the balancer.
    server = httpx2.get(f"{url}/servers/time", headers=ADMIN, timeout=10)
    assert server.status_code == 200, server.text
    assert server.json()["tools"] == ["get_system_time", "convert_time"]
    env = {
        **os.environ,
        "URL": f"{url}/rpc",
        "JWT": make_token("loadtest", minutes=RUN_MINUTES),
        "PATH": f"{Path(hey).parent}:{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        ["bash", str(REPO / "tests" / "hey.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = result.stdout
    assert result.returncode == 0, result.stderr + report
    assert "Error distribution" not in report, report
    assert re.search(r"\[200\]\s+10000 responses", report), report
    # Both instances are still serving after the load (neither was the only one).
    for gateway in gateways:
        assert status_of(f"{gateway.url}/health") == 200
