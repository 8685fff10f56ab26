"""The multi-process tests: every test in this folder starts gunicorn gateways, so every one
carries the `cluster` marker (`pytest -m "not cluster"` skips them all)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's hooks see the whole session's items; -m selects after this runs.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)
