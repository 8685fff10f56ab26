"""A gateway for the bridge's tests: gunicorn with two workers sharing Redis (sessions,
events), our own upstream behind it with its asking tools, and stdio upstreams allowed to
run the tests' Python."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.support.gunicorn_process import GunicornGateway, gunicorn_env, register_upstream
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream


@dataclass(frozen=True)
class Deployment:
    gateway: GunicornGateway
    upstream: RunningUpstream
    redis_url: str
    cache_prefix: str
    workdir: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.gateway.url}/mcp"


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, redis_base_url: str
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("bridge")
    prefix = f"bridge-{os.getpid()}"
    upstream = start_own("--asking-tools")
    env = gunicorn_env(
        f"sqlite:///{workdir / 'gateway.db'}",
        CACHE_TYPE="redis",
        REDIS_URL=redis_base_url,
        CACHE_PREFIX=prefix,
        TOOL_TIMEOUT="10",
        STDIO_COMMANDS=sys.executable,
        STDIO_RUNTIME_DIR=str(workdir / "stdio"),
    )
    gateway = GunicornGateway(env, free_port(), workdir, workers=2)
    try:
        gateway.start()
        register_upstream(gateway.url, upstream)
        yield Deployment(gateway, upstream, redis_base_url, prefix, workdir)
    finally:
        gateway.stop()
        stop_upstream(upstream)
        forget_prefix(redis_base_url, prefix)


def forget_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
