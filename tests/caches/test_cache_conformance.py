"""Every built-in cache passes the conformance suite, on the real servers.

Caches are built through the plugin specs, exactly as the gateway builds them: memory,
database on SQLite, database on PostgreSQL, and redis.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg2
import pytest

from gateway.contracts import Cache
from gateway.plugins import Plugins
from gateway.settings import Settings
from gateway.store import open_store
from gateway.testing.cache_conformance import CacheConformance, CacheOpener, DropConnections
from gateway_plugins.cache_redis import RedisCache
from tests.caches.conftest import NO_STORE, delete_prefix, kill_clients

ENCRYPTION_SECRET = "secret"


@asynccontextmanager
async def open_cache(
    name: str,
    default_prefix: str,
    *,
    database_url: str = "",
    redis_url: str = "",
    prefix: str | None = None,
) -> AsyncIterator[Cache]:
    """A started cache of plugin `name`, with its store when it needs one.

    Module-level (and used through `functools.partial`) so spawned processes can build
    their own instances.
    """
    settings = Settings(
        cache_type=name,
        cache_prefix=default_prefix if prefix is None else prefix,
        database_url=database_url,
        plugin_values={"REDIS_URL": redis_url},
        auth_encryption_secret=ENCRYPTION_SECRET,
        tool_timeout=5.0,
    )
    spec = Plugins.load(settings).cache_for(settings)
    store = open_store(database_url, ENCRYPTION_SECRET) if name == "database" else NO_STORE
    if store is not None:
        await store.start()
    try:
        cache = spec.factory(settings, store)
        await cache.start()
        try:
            yield cache
        finally:
            await cache.close()
    finally:
        if store is not None:
            await store.close()


def test_only_the_memory_cache_is_unshared() -> None:
    """Which classes below get a `cache_factory`: only shared caches have a second instance."""
    caches = Plugins.load(Settings()).caches.items
    assert {name: caches[name].shared for name in ("memory", "database", "redis")} == {
        "memory": False,
        "database": True,
        "redis": True,
    }


class TestMemoryCache(CacheConformance):
    @pytest.fixture
    async def cache(self, cache_prefix: str) -> AsyncIterator[Cache]:
        async with open_cache("memory", cache_prefix) as cache:
            yield cache


class TestDatabaseCacheOnSQLite(CacheConformance):
    @pytest.fixture
    def cache_factory(self, sqlite_url: str, cache_prefix: str) -> CacheOpener:
        return functools.partial(open_cache, "database", cache_prefix, database_url=sqlite_url)

    @pytest.fixture
    async def cache(self, cache_factory: CacheOpener) -> AsyncIterator[Cache]:
        async with cache_factory() as cache:
            yield cache


class TestDatabaseCacheOnPostgreSQL(CacheConformance):
    @pytest.fixture
    def application_name(self) -> str:
        """Marks this test's connections, so dropping them spares everyone else's."""
        return f"cache-conformance-{uuid.uuid4().hex[:10]}"

    @pytest.fixture
    def cache_factory(
        self, postgres_url: str, application_name: str, cache_prefix: str
    ) -> CacheOpener:
        url = f"{postgres_url}&application_name={application_name}"
        return functools.partial(open_cache, "database", cache_prefix, database_url=url)

    @pytest.fixture
    async def cache(self, cache_factory: CacheOpener) -> AsyncIterator[Cache]:
        async with cache_factory() as cache:
            yield cache

    @pytest.fixture
    def drop_connections(self, postgres_base_url: str, application_name: str) -> DropConnections:
        def terminate() -> int:
            conn = psycopg2.connect(postgres_base_url)
            try:
                conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s AND pid <> pg_backend_pid()",
                        (application_name,),
                    )
                    return len(cursor.fetchall())
            finally:
                conn.close()

        async def drop() -> None:
            assert await asyncio.to_thread(terminate) > 0, "the cache held no connections"

        return drop


class TestRedisCache(CacheConformance):
    @pytest.fixture
    def cache_factory(self, redis_base_url: str, cache_prefix: str) -> CacheOpener:
        return functools.partial(open_cache, "redis", cache_prefix, redis_url=redis_base_url)

    @pytest.fixture
    async def cache(
        self, cache_factory: CacheOpener, redis_base_url: str, cache_prefix: str
    ) -> AsyncIterator[Cache]:
        async with cache_factory() as cache:
            yield cache
        await delete_prefix(redis_base_url, cache_prefix)

    @pytest.fixture
    def drop_connections(self, redis_base_url: str, cache: Cache) -> DropConnections:
        assert isinstance(cache, RedisCache)
        name = cache.client_name

        async def drop() -> None:
            killed = await kill_clients(redis_base_url, name, ("normal", "pubsub"))
            assert killed > 0, "the cache held no connections"

        return drop
