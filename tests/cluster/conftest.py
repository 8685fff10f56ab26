"""The multi-process tests: every test in this folder starts gunicorn gateways, so every one
carries the `cluster` marker (`pytest -m "not cluster"` skips them all). A module whose
gateways serve all its tests keeps its PostgreSQL data in `module_postgres_url`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_schema
from tests.upstreams.processes import RunningUpstream, start_own, stop_upstream

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's hooks see the whole session's items; -m selects after this runs.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="module")
def module_postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A schema of this module's own, since one deployment serves all its tests."""
    with fresh_schema(postgres_base_url) as url:
        yield url


@pytest.fixture(scope="module")
def asking_upstream() -> Iterator[RunningUpstream]:
    """Our upstream with the tools that ask the client while they run (`--asking-tools`)."""
    upstream = start_own("--asking-tools")
    yield upstream
    stop_upstream(upstream)
