"""The `memory` cache: TTLs, the LRU bound, atomic counters, in-process pub/sub, prefixes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.contracts import Cache
from gateway.plugins import Plugins
from gateway.settings import Settings, load_settings
from gateway_plugins.cache_memory import SUBSCRIBER_QUEUE_SIZE, MemoryCache, create_memory_cache
from tests.caches.conftest import NO_STORE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(clock: FakeClock) -> AsyncIterator[MemoryCache]:
    cache = MemoryCache(max_items=100, prefix="test", clock=clock)
    await cache.start()
    yield cache
    await cache.close()


async def collect(cache: MemoryCache, channel: str, count: int) -> list[bytes]:
    received = []
    async for message in cache.subscribe(channel):
        received.append(message)
        if len(received) == count:
            break
    return received


def test_memory_cache_is_registered_as_an_unshared_cache() -> None:
    spec = Plugins.load(Settings()).caches.items["memory"]
    assert spec.shared is False
    cache = spec.factory(
        Settings(cache_prefix="p", plugin_values={"MEMORY_CACHE_MAX_ITEMS": 7}), NO_STORE
    )
    assert isinstance(cache, MemoryCache)
    assert isinstance(cache, Cache)
    assert cache.max_items == 7


def test_factory_reads_bound_and_prefix_from_settings() -> None:
    environ = {"MEMORY_CACHE_MAX_ITEMS": "3", "CACHE_PREFIX": "gw"}
    cache = create_memory_cache(load_settings(environ, env_file=None), NO_STORE)
    assert (cache.max_items, cache.prefix) == (3, "gw:")


def test_factory_defaults_to_100000_items() -> None:
    assert create_memory_cache(Settings(), NO_STORE).max_items == 100_000


async def test_set_then_get_returns_the_value_and_delete_removes_it(cache: MemoryCache) -> None:
    await cache.set("k", b"v")
    assert await cache.get("k") == b"v"
    await cache.delete("k")
    assert await cache.get("k") is None
    await cache.delete("never-set")


async def test_entry_expires_after_its_ttl(cache: MemoryCache, clock: FakeClock) -> None:
    await cache.set("short", b"1", ttl=10)
    await cache.set("forever", b"2")
    clock.now += 9.9
    assert await cache.get("short") == b"1"
    clock.now += 0.1
    assert await cache.get("short") is None
    clock.now += 1e6
    assert await cache.get("forever") == b"2"


async def test_ttl_that_is_not_positive_is_refused(cache: MemoryCache) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        await cache.set("k", b"v", ttl=0)


async def test_lru_evicts_the_least_recently_used_entry_at_the_bound(clock: FakeClock) -> None:
    cache = MemoryCache(max_items=3, prefix="lru", clock=clock)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode())
    assert await cache.get("a") == b"a"  # now "b" is the least recently used
    await cache.set("d", b"d")
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert len(cache._entries) == 3


async def test_incr_counts_from_one_and_keeps_the_first_expiry(
    cache: MemoryCache, clock: FakeClock
) -> None:
    assert await cache.incr("hits", ttl=60) == 1
    clock.now += 30
    assert await cache.incr("hits", ttl=60) == 2
    assert await cache.get("hits") == b"2"
    clock.now += 30
    assert await cache.incr("hits", ttl=60) == 1


async def test_incr_on_a_non_integer_value_raises(cache: MemoryCache) -> None:
    await cache.set("word", b"abc")
    with pytest.raises(ValueError, match="does not hold an integer"):
        await cache.incr("word", ttl=1)


async def test_incr_is_atomic_under_many_tasks(cache: MemoryCache) -> None:
    results = await asyncio.gather(*(cache.incr("n", ttl=60) for _ in range(500)))
    assert sorted(results) == list(range(1, 501))
    assert await cache.get("n") == b"500"


async def test_add_sets_only_when_absent_and_exactly_one_task_wins(cache: MemoryCache) -> None:
    won = await asyncio.gather(*(cache.add("lock", str(i).encode(), ttl=5) for i in range(200)))
    assert won.count(True) == 1
    assert await cache.get("lock") == str(won.index(True)).encode()


async def test_add_succeeds_again_once_the_key_expired(
    cache: MemoryCache, clock: FakeClock
) -> None:
    assert await cache.add("lock", b"a", ttl=5)
    assert not await cache.add("lock", b"b", ttl=5)
    clock.now += 5
    assert await cache.add("lock", b"c", ttl=5)
    assert await cache.get("lock") == b"c"


async def test_publish_reaches_every_subscriber_of_the_channel(cache: MemoryCache) -> None:
    readers = [asyncio.create_task(collect(cache, "news", 2)) for _ in range(3)]
    other = asyncio.create_task(collect(cache, "sport", 1))
    await asyncio.sleep(0)  # each task starts iterating, which registers its queue
    assert cache.subscriber_count("news") == 3
    await cache.publish("news", b"one")
    await cache.publish("news", b"two")
    assert await asyncio.gather(*readers) == [[b"one", b"two"]] * 3
    assert not other.done()
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other


async def test_publish_without_subscribers_is_dropped(cache: MemoryCache) -> None:
    await cache.publish("nobody", b"x")
    reader = asyncio.create_task(collect(cache, "nobody", 1))
    await asyncio.sleep(0)
    await cache.publish("nobody", b"y")
    assert await reader == [b"y"]


async def test_cancelled_subscriber_is_unregistered(cache: MemoryCache) -> None:
    reader = asyncio.create_task(collect(cache, "ch", 10))
    await asyncio.sleep(0)
    assert cache.subscriber_count("ch") == 1
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert cache.subscriber_count("ch") == 0
    assert cache._channels == {}


async def test_slow_subscriber_keeps_only_the_newest_messages(cache: MemoryCache) -> None:
    subscription = cache.subscribe("firehose")
    first = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    for i in range(SUBSCRIBER_QUEUE_SIZE + 5):
        await cache.publish("firehose", str(i).encode())
    received = [await first]
    received += [await anext(subscription) for _ in range(SUBSCRIBER_QUEUE_SIZE - 1)]
    assert received == [str(i).encode() for i in range(5, SUBSCRIBER_QUEUE_SIZE + 5)]
    await subscription.aclose()
    assert cache.subscriber_count("firehose") == 0


async def test_caches_with_different_prefixes_share_no_keys_or_channels(
    clock: FakeClock,
) -> None:
    one = MemoryCache(max_items=10, prefix="one", clock=clock)
    two = MemoryCache(max_items=10, prefix="two", clock=clock)
    await one.set("k", b"1")
    assert await two.get("k") is None
    assert list(one._entries) == ["one:k"]
    reader = asyncio.create_task(collect(two, "ch", 1))
    await asyncio.sleep(0)
    await one.publish("ch", b"from-one")
    await asyncio.sleep(0)
    assert not reader.done()
    await two.publish("ch", b"from-two")
    assert await reader == [b"from-two"]


async def test_health_is_always_fine(cache: MemoryCache) -> None:
    assert await cache.health() is None


async def test_close_empties_the_cache(cache: MemoryCache) -> None:
    await cache.set("k", b"v")
    await cache.close()
    assert await cache.get("k") is None
