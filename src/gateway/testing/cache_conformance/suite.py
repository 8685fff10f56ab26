"""`CacheConformance`: the whole suite as one class that a test module subclasses."""

from __future__ import annotations

import pytest

from gateway.contracts import Cache
from gateway.testing.cache_conformance.counters_locks import CounterAndLockTests
from gateway.testing.cache_conformance.key_value import KeyValueTests
from gateway.testing.cache_conformance.pubsub import PubSubTests
from gateway.testing.cache_conformance.recovery import RecoveryTests
from gateway.testing.cache_conformance.shared import SharedCacheTests


class FixtureTests:
    """The `cache` fixture gives a working gateway `Cache`; the rest of the suite needs one."""

    async def test_cache_fixture_yields_an_object_of_the_cache_protocol(self, cache: Cache) -> None:
        assert isinstance(cache, Cache), (
            f"the cache fixture gave {cache!r}: define a `cache` fixture yielding a started "
            "gateway Cache (pytest's own `cache` fixture answers otherwise)"
        )

    async def test_health_passes_when_the_cache_is_up(self, cache: Cache) -> None:
        await cache.health()


# pytest runs the tests of the last base first, so the bases stand in reverse: the fixture
# checks come first, the quick single-instance tests next, the slow multi-process ones last.
class CacheConformance(
    RecoveryTests, SharedCacheTests, PubSubTests, CounterAndLockTests, KeyValueTests, FixtureTests
):
    """The tests every `Cache` must pass; subclass it and provide the fixtures."""

    pytestmark = pytest.mark.asyncio
