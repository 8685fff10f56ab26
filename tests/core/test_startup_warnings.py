"""Start-up warnings are said once per server: by gunicorn's master, or by `serve`, never
once per worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.plugins import Plugins
from gateway.settings import Settings
from gateway.startup import startup_warnings
from tests.support.gateway_process import serving, status_of
from tests.support.gunicorn_process import StartGunicorn

pytestmark = pytest.mark.timeout(120)

WORKERS = 2
# Every warning the gateway has: anonymous access, no encryption secret, a per-worker cache.
RISKY = {
    "AUTH_REQUIRED": "false",
    "AUTH_ENCRYPTION_SECRET": "",
    "CACHE_TYPE": "memory",
    "LOG_LEVEL": "info",
}


def expected_warnings(workers: int, database_url: str = Settings.database_url) -> list[str]:
    settings = Settings(auth_required=False, cache_type="memory", database_url=database_url)
    return startup_warnings(settings, Plugins.load(settings), workers)


def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {within:g}s")
        time.sleep(0.1)


def test_safe_settings_give_no_warnings() -> None:
    settings = Settings(auth_encryption_secret="secret", cache_type="database")
    assert startup_warnings(settings, Plugins.load(settings), workers=WORKERS) == []


def test_each_risky_setting_has_its_warning() -> None:
    warnings = expected_warnings(WORKERS)
    assert len(warnings) == 3
    for variable in ("AUTH_REQUIRED=false", "AUTH_ENCRYPTION_SECRET", "CACHE_TYPE=memory"):
        assert any(variable in warning for warning in warnings), variable


def test_a_per_worker_cache_needs_no_warning_with_one_worker() -> None:
    assert not any("CACHE_TYPE" in warning for warning in expected_warnings(1))


@pytest.mark.cluster
def test_gunicorn_says_each_warning_once_for_all_its_workers(
    tmp_path: Path, gunicorn: StartGunicorn
) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}", **RISKY}
    gateway = gunicorn(env, workers=WORKERS)
    wait_for(
        lambda: gateway.log_path.read_text().count("gateway started") == WORKERS,
        within=30,
        what=f"{WORKERS} workers started",
    )
    gateway.stop()
    output = gateway.log_path.read_text()
    for warning in expected_warnings(WORKERS, env["DATABASE_URL"]):
        assert output.count(warning) == 1, (warning, output[-3000:])


def test_serve_says_each_warning_once(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}", **RISKY}
    with serving(env, tmp_path) as gateway:
        assert status_of(f"{gateway.url}/health") == 200
    output = gateway.log_path.read_text()
    for warning in expected_warnings(1, env["DATABASE_URL"]):
        assert output.count(warning) == 1, (warning, output[-3000:])
