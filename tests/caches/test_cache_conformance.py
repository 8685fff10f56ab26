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
from typing import Any

import psycopg2
import pytest
import redis.asyncio as aioredis

from gateway.contracts import Cache
from gateway.plugins import Plugins
from gateway.settings import Settings
from gateway.store import open_store
from gateway.testing.cache_conformance import CacheConformance, CacheOpener, DropConnections
from gateway_plugins.cache_redis import RedisCache

ENCRYPTION_SECRET = "secret"

# The memory and redis caches never touch the store their factory receives.
NO_STORE: Any = None


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


async def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete what a test left under `prefix:`, since the Redis server outlives the run."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


async def kill_clients(redis_url: str, name: str, types: tuple[str, ...]) -> int:
    """`CLIENT KILL` every connection called `name` of the given types; how many.

    Other test runs share this Redis, so connections are picked by name rather than
    with a blanket `CLIENT KILL TYPE normal`.
    """
    admin = aioredis.Redis.from_url(redis_url)
    try:
        killed = 0
        for client in await admin.client_list():
            if client["name"] == name and _client_type(client) in types:
                killed += await admin.client_kill_filter(_id=client["id"])
        return killed
    finally:
        await admin.aclose()


def _client_type(client: dict[str, Any]) -> str:
    # CLIENT LIST marks a subscriber with the flag P (or counts its subscriptions).
    subscribed = "P" in client.get("flags", "") or int(client.get("sub", 0)) > 0
    return "pubsub" if subscribed else "normal"


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
