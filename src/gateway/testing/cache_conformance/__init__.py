"""The conformance suite of the `Cache` contract, shipped as a pytest plugin.

Every cache the gateway can run on (built-in or from a third-party plugin) must pass the
same tests: round trips, TTLs, atomic `incr` and `add` under concurrency (across tasks
and, for shared caches, across OS processes), pub/sub, large values, unusual keys,
prefix isolation, health, and recovery after dropped connections.

Installing the gateway registers this module as a pytest plugin (entry point
`pytest11: aio_mcp_gateway_cache`), which only adds the fallback fixtures described
below; without the entry point, add `pytest_plugins = ["gateway.testing.cache_conformance"]`
to a `conftest.py`. The tests are async and need pytest-asyncio.

To run the suite against your cache, subclass `CacheConformance` in a test module and
provide fixtures (as methods of the subclass, or in the module or a `conftest.py`):

- `cache` (required): an async fixture yielding a started instance. It overrides
  pytest's built-in `cache` fixture; the first test of the suite says so if you forget.
- `cache_factory` (shared caches only, i.e. `CacheSpec.shared=True`): a callable with
  the `CacheOpener` signature. `cache_factory()` returns an async context manager
  yielding another started instance on the same backend and prefix as `cache`;
  `cache_factory(prefix="other")` one with a different prefix. It is pickled into
  spawned processes, so make it a module-level function or a `functools.partial` of
  one. Without it, the cross-instance, cross-process and prefix tests skip.
- `drop_connections`: an async callable that kills the server-side connections the
  `cache` instance holds (for Redis, `CLIENT KILL` of its clients; for PostgreSQL,
  `pg_terminate_backend` of its backends), issued from a separate connection. Without
  it, the recovery test skips.

For example::

    import functools
    from contextlib import asynccontextmanager

    import pytest

    from gateway.testing.cache_conformance import CacheConformance
    from my_plugin import MyCache

    @asynccontextmanager
    async def open_my_cache(url, default_prefix, *, prefix=None):
        cache = MyCache(url, prefix or default_prefix)
        await cache.start()
        try:
            yield cache
        finally:
            await cache.close()

    class TestMyCache(CacheConformance):
        @pytest.fixture
        def cache_factory(self):
            return functools.partial(open_my_cache, "my://server", "conformance-test")

        @pytest.fixture
        async def cache(self, cache_factory):
            async with cache_factory() as cache:
                yield cache

Then `pytest test_my_cache.py` runs the whole suite; `-k` selects parts of it. Give the
suite a prefix (or a database) of its own: it writes keys, a few of them without a TTL.

The tests live in this package by feature: `key_value`, `counters_locks`, `pubsub`,
`shared` (a second instance, other processes) and `recovery`; `suite` joins them.
"""

from __future__ import annotations

from gateway.testing.cache_conformance.fixtures import (
    CacheOpener,
    DropConnections,
    cache_factory,
    drop_connections,
)
from gateway.testing.cache_conformance.key_value import UNUSUAL_KEYS
from gateway.testing.cache_conformance.listeners import (
    MESSAGE,
    PROBE,
    Listener,
    listening,
    wait_until_listening,
)
from gateway.testing.cache_conformance.processes import (
    ADDS_PER_PROCESS,
    INCRS_PER_PROCESS,
    PROCESS_DEADLINE,
    PROCESSES,
    Job,
)
from gateway.testing.cache_conformance.suite import CacheConformance
from gateway.testing.cache_conformance.support import (
    CONCURRENCY,
    DELIVERY_DEADLINE,
    EARLY_TOLERANCE,
    EXPIRY_DEADLINE,
    LONG_TTL,
    POLL_INTERVAL,
    RECOVERY_DEADLINE,
    SHORT_TTL,
    SUBSCRIBE_DEADLINE,
    unique,
)

# The fallback fixtures must be attributes of this module: pytest registers the fixtures of
# the plugin module the entry point names. The helpers and limits serve a plugin's own tests.
__all__ = [
    "ADDS_PER_PROCESS",
    "CONCURRENCY",
    "DELIVERY_DEADLINE",
    "EARLY_TOLERANCE",
    "EXPIRY_DEADLINE",
    "INCRS_PER_PROCESS",
    "LONG_TTL",
    "MESSAGE",
    "POLL_INTERVAL",
    "PROBE",
    "PROCESSES",
    "PROCESS_DEADLINE",
    "RECOVERY_DEADLINE",
    "SHORT_TTL",
    "SUBSCRIBE_DEADLINE",
    "UNUSUAL_KEYS",
    "CacheConformance",
    "CacheOpener",
    "DropConnections",
    "Job",
    "Listener",
    "cache_factory",
    "drop_connections",
    "listening",
    "unique",
    "wait_until_listening",
]
