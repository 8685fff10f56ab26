"""The event loop the gateway runs on: uvloop by default, asyncio's own with EVENT_LOOP=asyncio.

Each worker reports its running loop in `/version`, so these start real servers and ask them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings
from tests.support.gateway_process import serving, versions_by_worker
from tests.support.gunicorn_process import StartGunicorn, sqlite_env

pytestmark = pytest.mark.timeout(90)


def loops_by_worker(url: str, workers: int = 2) -> dict[int, str]:
    """`/version`'s event loop per worker pid."""
    versions = versions_by_worker(url, workers)
    return {pid: str(version["event_loop"]) for pid, version in versions.items()}


@pytest.fixture(autouse=True)
def no_event_loop_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway inherits this process's environment: a developer's EVENT_LOOP must not
    # decide what "the default" means here.
    monkeypatch.delenv("EVENT_LOOP", raising=False)


@pytest.mark.cluster
def test_gunicorn_workers_run_on_uvloop_by_default(tmp_path: Path, gunicorn: StartGunicorn) -> None:
    gateway = gunicorn(sqlite_env(tmp_path))

    loops = loops_by_worker(gateway.url)

    assert set(loops.values()) == {"uvloop"}, loops


@pytest.mark.cluster
def test_event_loop_asyncio_runs_gunicorn_workers_on_asyncio(
    tmp_path: Path, gunicorn: StartGunicorn
) -> None:
    gateway = gunicorn(sqlite_env(tmp_path, EVENT_LOOP="asyncio"))

    loops = loops_by_worker(gateway.url)

    assert set(loops.values()) == {"asyncio"}, loops


def test_serve_runs_on_uvloop_by_default(tmp_path: Path) -> None:
    with serving(sqlite_env(tmp_path), tmp_path) as gateway:
        assert set(loops_by_worker(gateway.url, workers=1).values()) == {"uvloop"}


def test_event_loop_setting_accepts_only_known_loops() -> None:
    assert load_settings({}, env_file=None).event_loop == "auto"
    assert load_settings({"EVENT_LOOP": " AsyncIO "}, env_file=None).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="EVENT_LOOP='trio' is not one of: auto, uvloop"):
        load_settings({"EVENT_LOOP": "trio"}, env_file=None)
