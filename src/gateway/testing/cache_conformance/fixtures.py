"""The fixtures the suite asks for beyond `cache`, their types, and fallbacks that skip.

A test module, its class or a `conftest.py` overrides the fallbacks; where one is not
overridden, only the tests that need it skip.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import pytest

from gateway.contracts import Cache


class CacheOpener(Protocol):
    """What the `cache_factory` fixture returns."""

    def __call__(self, *, prefix: str | None = None) -> AbstractAsyncContextManager[Cache]:
        """Another started instance; `prefix` replaces the one `cache` uses."""
        ...


DropConnections = Callable[[], Awaitable[None]]


@pytest.fixture
def cache_factory() -> CacheOpener:
    """Fallback: skip the tests that need a second instance of a shared cache."""
    pytest.skip("no cache_factory fixture: the cache is not shared, or no factory was given")


@pytest.fixture
def drop_connections() -> DropConnections:
    """Fallback: skip the test of recovery after dropped connections."""
    pytest.skip("no drop_connections fixture: the cache has no connections to drop")
