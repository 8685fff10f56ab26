"""Run the gateway as an operator does: `gunicorn -c gunicorn.conf.py` in a real process.

Also a pytest plugin (loaded by the top-level conftest): the `gunicorn` fixture starts
gateways for one test and stops them after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import RUN_MINUTES, TEST_SECRET, free_port, make_token
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


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class GunicornGateway:
    def __init__(self, env: Mapping[str, str], port: int, workdir: Path, workers: int = 2) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / f"gunicorn-{port}.log"
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GUNICORN_WORKERS": str(workers),
            "LOG_FORMAT": "json",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GunicornGateway:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            if status_of(f"{self.url}/health") == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


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
