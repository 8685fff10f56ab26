"""Recovery after the server drops the cache's connections; needs the `drop_connections`
fixture and skips without it.
"""

from __future__ import annotations

from gateway.contracts import Cache
from gateway.testing.cache_conformance.fixtures import DropConnections
from gateway.testing.cache_conformance.listeners import (
    heard_after_drop,
    listening,
    wait_until_listening,
)
from gateway.testing.cache_conformance.support import LONG_TTL, eventually, unique


class RecoveryTests:
    """Operations and existing subscriptions work again once the cache reconnects."""

    async def test_operations_and_subscriptions_recover_after_connections_drop(
        self, cache: Cache, drop_connections: DropConnections
    ) -> None:
        key, channel = unique("survivor"), unique("news")
        await cache.set(key, b"before")
        async with listening(cache, channel) as listener:
            await wait_until_listening(cache, channel, listener)
            await drop_connections()
            assert await eventually(lambda: cache.get(key), "get") == b"before"
            await eventually(lambda: cache.set(key, b"after", LONG_TTL), "set")
            assert await eventually(lambda: cache.incr(unique("c"), LONG_TTL), "incr") == 1
            assert await eventually(lambda: cache.add(unique("l"), b"x", LONG_TTL), "add")
            await eventually(cache.health, "health")
            assert await heard_after_drop(cache, channel, listener)
