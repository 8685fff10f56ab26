"""The `database` cache on SQLite and PostgreSQL: expiry, atomic counters and set-if-absent,
pub/sub between separate stores, large values and key prefixes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.contracts import Cache, CacheSpec
from gateway.plugins import Registrar
from gateway.settings import Settings
from gateway.store import Store, StoreError, open_store
from gateway_plugins import cache_database, cache_polling
from gateway_plugins.cache_database import DatabaseCache, notify_channel

OpenCache = Callable[..., Awaitable[DatabaseCache]]


@pytest.fixture
async def open_cache(database_url: str, cache_prefix: str) -> AsyncIterator[OpenCache]:
    """`await open_cache(prefix=...)`: a started cache on a store of its own, as a separate
    worker process would have; everything is closed after the test."""
    opened: list[tuple[Store, DatabaseCache]] = []

    async def open_one(prefix: str = cache_prefix, **options: float) -> DatabaseCache:
        store = open_store(database_url, "cache-test-secret")
        await store.start()
        cache = DatabaseCache(store, prefix, **options)
        await cache.start()
        opened.append((store, cache))
        return cache

    yield open_one
    for store, cache in reversed(opened):
        await cache.close()
        await store.close()


@pytest.fixture
async def cache(open_cache: OpenCache) -> DatabaseCache:
    return await open_cache()


def test_plugin_registers_a_shared_database_cache(cache_prefix: str) -> None:
    register: Registrar[CacheSpec] = Registrar("cache")
    cache_database.gateway_register_caches(register)

    spec = register.items["database"]
    assert spec.shared is True
    built = spec.factory(Settings(cache_prefix=cache_prefix), open_store("sqlite:///x.db", "s"))
    assert isinstance(built, Cache)
    assert isinstance(built, DatabaseCache) and built.prefix == f"{cache_prefix}:"


async def test_get_returns_what_set_stored_and_none_for_a_missing_key(cache: Cache) -> None:
    await cache.set("k", b"value")
    assert await cache.get("k") == b"value"
    assert await cache.get("missing") is None


async def test_set_replaces_the_value_and_its_ttl(cache: Cache) -> None:
    await cache.set("k", b"old", ttl=0.2)
    await cache.set("k", b"new")
    await asyncio.sleep(0.3)
    assert await cache.get("k") == b"new"


async def test_value_expires_after_its_ttl(cache: Cache) -> None:
    await cache.set("k", b"value", ttl=0.3)
    assert await cache.get("k") == b"value"
    await asyncio.sleep(0.4)
    assert await cache.get("k") is None


async def test_delete_removes_the_key(cache: Cache) -> None:
    await cache.set("k", b"value")
    await cache.delete("k")
    await cache.delete("never-set")
    assert await cache.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_a_ttl_that_is_not_positive_is_refused(cache: Cache, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        await cache.set("k", b"v", ttl=ttl)


async def test_incr_under_50_concurrent_tasks_on_two_stores_counts_1_to_50(
    open_cache: OpenCache,
) -> None:
    first, second = await open_cache(), await open_cache()

    results = await asyncio.gather(*(c.incr("hits", ttl=30) for c in [first, second] * 25))

    assert sorted(results) == list(range(1, 51))
    assert await first.get("hits") == b"50"


async def test_incr_restarts_at_one_after_the_window_expires(cache: Cache) -> None:
    assert [await cache.incr("window", ttl=0.3) for _ in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.4)
    assert await cache.incr("window", ttl=0.3) == 1


async def test_incr_keeps_the_first_expiry_of_the_window(cache: Cache) -> None:
    await cache.incr("window", ttl=0.4)
    await asyncio.sleep(0.25)
    await cache.incr("window", ttl=10)
    await asyncio.sleep(0.25)
    assert await cache.incr("window", ttl=10) == 1


async def test_add_under_concurrency_on_two_stores_has_exactly_one_winner(
    open_cache: OpenCache,
) -> None:
    first, second = await open_cache(), await open_cache()

    won = await asyncio.gather(
        *(c.add("lock", f"owner-{i}".encode(), ttl=30) for i, c in enumerate([first, second] * 10))
    )

    assert won.count(True) == 1
    assert await first.get("lock") == f"owner-{won.index(True)}".encode()


async def test_add_takes_over_an_expired_key(cache: Cache) -> None:
    assert await cache.add("lock", b"first", ttl=0.2) is True
    assert await cache.add("lock", b"second", ttl=0.2) is False
    await asyncio.sleep(0.3)
    assert await cache.add("lock", b"third", ttl=5) is True
    assert await cache.get("lock") == b"third"


async def test_a_one_mib_value_round_trips(cache: Cache) -> None:
    value = bytes(range(256)) * 4096
    await cache.set("big", value)
    assert await cache.get("big") == value


async def test_two_prefixes_on_one_database_do_not_see_each_other(open_cache: OpenCache) -> None:
    one, two = await open_cache(prefix="one"), await open_cache(prefix="two")

    await one.set("k", b"from one")
    await two.set("k", b"from two")
    await one.incr("n", ttl=30)

    assert await one.get("k") == b"from one"
    assert await two.get("k") == b"from two"
    assert await two.incr("n", ttl=30) == 1
    await two.delete("k")
    assert await one.get("k") == b"from one"


async def test_purge_deletes_expired_rows_of_every_prefix(open_cache: OpenCache) -> None:
    one, two = await open_cache(prefix="one"), await open_cache(prefix="two")
    await one.set("old", b"x", ttl=0.1)
    await two.set("old", b"x", ttl=0.1)
    await one.set("kept", b"x")
    await asyncio.sleep(0.2)

    await one.purge()

    async with one.store.connection() as conn:
        rows = await conn.fetchall("SELECT key FROM cache_entries ORDER BY key")
    assert rows == [("one:kept",)]


async def test_background_purge_runs_on_its_interval(open_cache: OpenCache) -> None:
    cache = await open_cache(purge_interval=0.1)
    await cache.set("old", b"x", ttl=0.05)
    await asyncio.sleep(0.4)

    async with cache.store.connection() as conn:
        assert await conn.fetchone("SELECT COUNT(*) FROM cache_entries") == (0,)


async def test_health_passes_on_a_started_store_and_fails_once_it_is_closed(
    database_url: str, cache_prefix: str
) -> None:
    store = open_store(database_url, "cache-test-secret")
    await store.start()
    cache = DatabaseCache(store, cache_prefix)
    await cache.health()
    await store.close()
    with pytest.raises(StoreError, match="is not started"):
        await cache.health()


# --- pub/sub ---------------------------------------------------------------------------------


async def first_messages(cache: Cache, channel: str, count: int) -> list[tuple[bytes, float]]:
    """The first `count` messages on `channel`, each with the monotonic time it arrived."""
    received: list[tuple[bytes, float]] = []
    messages = cache.subscribe(channel)
    try:
        async for message in messages:
            received.append((message, time.monotonic()))
            if len(received) == count:
                return received
    finally:
        await messages.aclose()  # type: ignore[attr-defined]
    return received


async def start_subscriber(
    cache: Cache, channel: str, count: int = 1
) -> asyncio.Task[list[tuple[bytes, float]]]:
    task = asyncio.create_task(first_messages(cache, channel, count))
    # Subscribing takes a round trip (LISTEN, or reading the newest message id).
    await asyncio.sleep(0.3)
    return task


async def test_publish_reaches_a_subscriber_on_another_store_within_one_second(
    open_cache: OpenCache,
) -> None:
    publisher, subscriber = await open_cache(), await open_cache()
    task = await start_subscriber(subscriber, "events")

    sent_at = time.monotonic()
    await publisher.publish("events", b"\x00binary\xffpayload")

    [(message, arrived_at)] = await asyncio.wait_for(task, 2)
    assert message == b"\x00binary\xffpayload"
    assert arrived_at - sent_at < 1.0


async def test_every_subscriber_gets_every_message_in_order(open_cache: OpenCache) -> None:
    publisher = await open_cache()
    subscribers = [await open_cache(), publisher]
    tasks = [await start_subscriber(s, "events", count=3) for s in subscribers]

    for i in range(3):
        await publisher.publish("events", f"m{i}".encode())

    for task in tasks:
        received = await asyncio.wait_for(task, 2)
        assert [message for message, _ in received] == [b"m0", b"m1", b"m2"]


async def test_subscriber_gets_only_its_channel_and_prefix(open_cache: OpenCache) -> None:
    mine = await open_cache(prefix="mine")
    other_prefix = await open_cache(prefix="other")
    task = await start_subscriber(mine, "events")

    await other_prefix.publish("events", b"other prefix")
    await mine.publish("elsewhere", b"other channel")
    await mine.publish("events", b"for me")

    [(message, _)] = await asyncio.wait_for(task, 2)
    assert message == b"for me"


async def test_a_cancelled_subscriber_stops_cleanly(cache: Cache) -> None:
    task = await start_subscriber(cache, "events")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await cache.publish("events", b"nobody listens")


@pytest.fixture
async def sqlite_cache(sqlite_url: str, cache_prefix: str) -> AsyncIterator[DatabaseCache]:
    store = open_store(sqlite_url, "cache-test-secret")
    await store.start()
    cache = DatabaseCache(store, cache_prefix, poll_interval=0.05)
    await cache.start()
    yield cache
    await cache.close()
    await store.close()


async def test_on_sqlite_all_subscriptions_of_a_process_share_one_query_per_interval(
    sqlite_cache: DatabaseCache,
) -> None:
    channels = [f"channel-{n}" for n in range(5)]
    tasks = [await start_subscriber(sqlite_cache, channel) for channel in channels]
    before = sqlite_cache.subscriptions.polls
    started = time.monotonic()
    await asyncio.sleep(0.5)
    polls = sqlite_cache.subscriptions.polls - before
    # One subscription per channel polling alone would make five queries per interval.
    assert 0 < polls <= (time.monotonic() - started) / 0.05 + 1

    for channel in reversed(channels):
        await sqlite_cache.publish(channel, channel.encode())
    for channel, task in zip(channels, tasks, strict=True):
        [(message, _)] = await asyncio.wait_for(task, 2)
        assert message == channel.encode()


async def test_on_sqlite_a_later_subscription_gets_nothing_published_before_it(
    sqlite_cache: DatabaseCache,
) -> None:
    early = await start_subscriber(sqlite_cache, "events", count=2)
    await sqlite_cache.publish("events", b"before")
    late = await start_subscriber(sqlite_cache, "events")
    await sqlite_cache.publish("events", b"after")

    assert [m for m, _ in await asyncio.wait_for(early, 2)] == [b"before", b"after"]
    assert [m for m, _ in await asyncio.wait_for(late, 2)] == [b"after"]


async def test_on_sqlite_polling_stops_when_the_last_subscription_ends(
    sqlite_cache: DatabaseCache,
) -> None:
    task = await start_subscriber(sqlite_cache, "events")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    polls = sqlite_cache.subscriptions.polls
    await asyncio.sleep(0.3)
    assert sqlite_cache.subscriptions.polls == polls


async def test_on_sqlite_a_subscriber_that_falls_behind_keeps_a_bounded_backlog(
    sqlite_cache: DatabaseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_polling, "MAX_BACKLOG", 3)
    messages = sqlite_cache.subscribe("events")
    first = asyncio.ensure_future(anext(messages))
    await asyncio.sleep(0.2)  # subscribed
    await sqlite_cache.publish("events", b"m0")
    assert await asyncio.wait_for(first, 2) == b"m0"
    # The subscriber now reads nothing while ten more messages come.
    for n in range(1, 11):
        await sqlite_cache.publish("events", f"m{n}".encode())
    await asyncio.sleep(0.3)  # every message has been polled
    waiting = [await asyncio.wait_for(anext(messages), 2) for _ in range(3)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(messages), 0.3)
    await messages.aclose()  # type: ignore[attr-defined]
    # The backlog held three; the newer ones were dropped rather than kept without bound.
    assert waiting == [b"m1", b"m2", b"m3"]


def test_notify_channel_names_are_short_distinct_identifiers() -> None:
    names = {notify_channel(c) for c in ["p:a-b", "p:a_b", "P:A-B", "p:" + "x" * 200]}
    assert len(names) == 4
    assert all(len(n) <= 63 and n.replace("_", "").isalnum() and n.islower() for n in names)
