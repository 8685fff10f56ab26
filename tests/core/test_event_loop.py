"""The event loop the gateway runs on: uvloop by default, asyncio's own with EVENT_LOOP=asyncio.

Each worker reports its running loop in `/version`, so these start real servers and ask them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from gateway.settings import SettingsError, load_settings
from tests.conftest import free_port
from tests.support.gunicorn_process import StartGunicorn, gunicorn_env, status_of

pytestmark = pytest.mark.timeout(90)

# urllib honours *_proxy variables; loopback requests must not go through one.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def gateway_env(workdir: Path, **extra: str) -> dict[str, str]:
    return gunicorn_env(f"sqlite:///{workdir / 'gateway.db'}", LOG_LEVEL="warning", **extra)


def loops_by_worker(url: str, asks: int = 12) -> dict[int, str]:
    """`/version`'s event loop per worker pid; urllib opens a fresh connection per request,
    so gunicorn may hand each one to any worker."""
    loops: dict[int, str] = {}
    for _ in range(asks):
        with _HTTP.open(f"{url}/version", timeout=5) as response:
            body = orjson.loads(response.read())
        loops[int(body["worker"])] = str(body["event_loop"])
    return loops


@pytest.fixture(autouse=True)
def no_event_loop_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway inherits this process's environment: a developer's EVENT_LOOP must not
    # decide what "the default" means here.
    monkeypatch.delenv("EVENT_LOOP", raising=False)


@pytest.mark.cluster
def test_gunicorn_workers_run_on_uvloop_by_default(tmp_path: Path, gunicorn: StartGunicorn) -> None:
    gateway = gunicorn(gateway_env(tmp_path))

    loops = loops_by_worker(gateway.url)

    assert set(loops.values()) == {"uvloop"}, loops


@pytest.mark.cluster
def test_event_loop_asyncio_runs_gunicorn_workers_on_asyncio(
    tmp_path: Path, gunicorn: StartGunicorn
) -> None:
    gateway = gunicorn(gateway_env(tmp_path, EVENT_LOOP="asyncio"))

    loops = loops_by_worker(gateway.url)

    assert set(loops.values()) == {"asyncio"}, loops


def test_serve_runs_on_uvloop_by_default(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **gateway_env(tmp_path)},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while status_of(f"{url}/health") != 200:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        assert set(loops_by_worker(url, asks=1).values()) == {"uvloop"}
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_event_loop_setting_accepts_only_known_loops() -> None:
    assert load_settings({}, env_file=None).event_loop == "auto"
    assert load_settings({"EVENT_LOOP": " AsyncIO "}, env_file=None).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="EVENT_LOOP='trio' is not one of: auto, uvloop"):
        load_settings({"EVENT_LOOP": "trio"}, env_file=None)
