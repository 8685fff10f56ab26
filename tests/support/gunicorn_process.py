"""Run the gateway as an operator does: `gunicorn -c gunicorn.conf.py` in a real process,
started and awaited as `tests.support.gateway_process` starts every gateway process.

Also a pytest plugin (loaded by the top-level conftest): the `gunicorn` fixture starts
gateways for one test and stops them after it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import RUN_MINUTES, TEST_SECRET, free_port, make_token
from tests.support.gateway_process import GatewayProcess
from tests.upstreams.processes import RunningUpstream

REPO = Path(__file__).resolve().parents[2]

# Made at import, so they must outlive the whole run.
ADMIN = {"Authorization": f"Bearer {make_token('root', ('admin',), minutes=RUN_MINUTES)}"}
USER = {"Authorization": f"Bearer {make_token('user', minutes=RUN_MINUTES)}"}


def gunicorn_env(database_url: str, **settings: str) -> dict[str, str]:
    """The settings every gunicorn gateway of the tests starts from: its store, the tests'
    token secret, an encryption secret and a short graceful stop; `settings` add or override."""
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": TEST_SECRET,
        "AUTH_ENCRYPTION_SECRET": "gunicorn-test-encryption-secret",
        "GUNICORN_GRACEFUL_TIMEOUT": "3",
        **settings,
    }


def sqlite_env(workdir: Path, **settings: str) -> dict[str, str]:
    """`gunicorn_env` for a gateway of its own: a SQLite store in `workdir`, warnings only."""
    return gunicorn_env(f"sqlite:///{workdir / 'gateway.db'}", LOG_LEVEL="warning", **settings)


class GunicornGateway(GatewayProcess):
    """`gunicorn -c gunicorn.conf.py` with `workers` workers."""

    name = "gunicorn"

    def __init__(self, env: Mapping[str, str], port: int, workdir: Path, workers: int = 2) -> None:
        listen = {"HOST": "127.0.0.1", "PORT": str(port), "GUNICORN_WORKERS": str(workers)}
        super().__init__({**listen, **env}, port, workdir)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]


def start_together(*gateways: GunicornGateway) -> None:
    """Start gateways at once: each spends its seconds of start-up mostly waiting."""
    with ThreadPoolExecutor(len(gateways)) as pool:
        for started in [pool.submit(gateway.start) for gateway in gateways]:
            started.result()


def admin_post(
    base_url: str, path: str, body: dict[str, Any], headers: Mapping[str, str] = ADMIN
) -> dict[str, Any]:
    response = httpx2.post(f"{base_url}{path}", json=body, headers=dict(headers), timeout=15.0)
    assert response.status_code == 201, response.text
    reply: dict[str, Any] = response.json()
    return reply


def register_upstream(
    base_url: str, upstream: RunningUpstream, headers: Mapping[str, str] = ADMIN
) -> None:
    """Register our upstream as `own`."""
    body = {"name": "own", "url": upstream.url, "transport": "streamable-http"}
    admin_post(base_url, "/upstreams", body, headers)


StartGunicorn = Callable[..., GunicornGateway]


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[StartGunicorn]:
    """Start a gateway under gunicorn in the test's directory, `gunicorn(env, workers=2)`;
    every one started is stopped after the test."""
    started: list[GunicornGateway] = []

    def start(env: Mapping[str, str], workers: int = 2) -> GunicornGateway:
        gateway = GunicornGateway(env, free_port(), tmp_path, workers=workers)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in reversed(started):
        gateway.stop()
