"""The garbage collector of a serving process (`gateway.heap`): what start-up built is
frozen out of collections, and the young-generation threshold is `GC_THRESHOLD`. Each
process reports both in `/version`, so these start real servers and ask them."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import SettingsError, load_settings
from tests.conftest import GatewayFactory
from tests.support.gateway_process import serving, versions_by_worker
from tests.support.gunicorn_process import StartGunicorn, sqlite_env

pytestmark = pytest.mark.timeout(90)


def collectors_by_worker(url: str, workers: int = 1) -> dict[int, Any]:
    """`/version`'s collector state per worker pid."""
    return {pid: v["gc"] for pid, v in versions_by_worker(url, workers).items()}


@pytest.fixture(autouse=True)
def no_gc_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GC_THRESHOLD", raising=False)


@pytest.mark.cluster
def test_every_gunicorn_worker_freezes_what_it_built_and_uses_the_default_threshold(
    tmp_path: Path, gunicorn: StartGunicorn
) -> None:
    gateway = gunicorn(sqlite_env(tmp_path), workers=2)

    collectors = collectors_by_worker(gateway.url, workers=2)

    assert len(collectors) == 2, collectors
    for state in collectors.values():
        assert state["threshold"] == 10_000
        # Modules, plugins and the app: tens of thousands of objects out of every collection.
        assert state["frozen"] > 10_000, state


def test_serve_takes_gc_threshold_from_the_setting(tmp_path: Path) -> None:
    with serving(sqlite_env(tmp_path, GC_THRESHOLD="2500"), tmp_path) as gateway:
        (state,) = collectors_by_worker(gateway.url).values()
    assert state["threshold"] == 2500
    assert state["frozen"] > 10_000, state


def test_gc_threshold_zero_keeps_pythons_threshold(tmp_path: Path) -> None:
    with serving(sqlite_env(tmp_path, GC_THRESHOLD="0"), tmp_path) as gateway:
        (state,) = collectors_by_worker(gateway.url).values()
    assert state["threshold"] == 700, state  # CPython's own default
    assert state["frozen"] > 10_000, state


def test_gc_threshold_must_be_a_whole_number_not_below_zero() -> None:
    assert load_settings({}, env_file=None).gc_threshold == 10_000
    assert load_settings({"GC_THRESHOLD": "0"}, env_file=None).gc_threshold == 0
    with pytest.raises(SettingsError, match="GC_THRESHOLD='-1' must be at least 0"):
        load_settings({"GC_THRESHOLD": "-1"}, env_file=None)
    with pytest.raises(SettingsError, match="GC_THRESHOLD='lots' is not an integer"):
        load_settings({"GC_THRESHOLD": "lots"}, env_file=None)


async def test_an_app_started_in_process_leaves_the_collector_alone(
    gateway: GatewayFactory,
) -> None:
    # Tests and embedders build and start apps with `build_app`; only a serving process
    # (gunicorn, `serve`) settles the heap, or each app's garbage would stay frozen.
    before = (gc.get_threshold(), gc.get_freeze_count())
    client = await gateway()
    assert (await client.get("/health")).status == 200
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
