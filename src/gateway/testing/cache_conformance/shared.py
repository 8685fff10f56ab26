"""Shared caches: a second instance on the same backend sees the same keys, counters, locks
and messages, one with another prefix sees none of them, and `incr` and `add` stay atomic
across OS processes. These tests need the `cache_factory` fixture and skip without it.
"""

from __future__ import annotations

from gateway.contracts import Cache
from gateway.testing.cache_conformance.fixtures import CacheOpener
from gateway.testing.cache_conformance.listeners import MESSAGE, listening, wait_until_listening
from gateway.testing.cache_conformance.processes import (
    ADDS_PER_PROCESS,
    INCRS_PER_PROCESS,
    PROCESSES,
    add_job,
    in_processes,
    incr_job,
)
from gateway.testing.cache_conformance.support import LONG_TTL, unique


class SharedCacheTests:
    """What every instance on one backend and prefix must agree on."""

    async def test_a_second_instance_sees_the_same_keys_counters_and_locks(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key, counter, lock = unique("shared"), unique("counter"), unique("lock")
        async with cache_factory() as other:
            await cache.set(key, b"value")
            assert await other.get(key) == b"value"
            await other.delete(key)
            assert await cache.get(key) is None
            assert [
                await cache.incr(counter, LONG_TTL),
                await other.incr(counter, LONG_TTL),
                await cache.incr(counter, LONG_TTL),
            ] == [1, 2, 3]
            assert await cache.add(lock, b"mine", LONG_TTL) is True
            assert await other.add(lock, b"theirs", LONG_TTL) is False

    async def test_publish_reaches_a_subscriber_on_another_instance_within_one_second(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        channel = unique("news")
        async with cache_factory() as other, listening(other, channel) as listener:
            await wait_until_listening(cache, channel, listener)
            await cache.publish(channel, MESSAGE)
            assert await listener.expect() == MESSAGE

    async def test_instances_with_different_prefixes_do_not_see_each_other(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key, counter, lock, channel = (unique(n) for n in ("key", "counter", "lock", "news"))
        async with cache_factory(prefix=unique("other-prefix")) as other:
            await cache.set(key, b"mine")
            assert await other.get(key) is None
            await other.set(key, b"theirs")
            await other.delete(key)
            assert await cache.get(key) == b"mine"
            assert await cache.incr(counter, LONG_TTL) == 1
            assert await other.incr(counter, LONG_TTL) == 1
            assert await cache.add(lock, b"mine", LONG_TTL) is True
            assert await other.add(lock, b"theirs", LONG_TTL) is True
            async with listening(cache, channel) as mine, listening(other, channel) as theirs:
                await wait_until_listening(cache, channel, mine)
                await wait_until_listening(other, channel, theirs)
                await other.publish(channel, b"theirs")
                await cache.publish(channel, b"mine")
                assert await mine.expect() == b"mine"
                assert await theirs.expect() == b"theirs"

    async def test_incr_counts_exactly_across_4_processes(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key = unique("counter")
        values = await in_processes(incr_job, cache_factory, key, INCRS_PER_PROCESS)
        assert sorted(values) == list(range(1, PROCESSES * INCRS_PER_PROCESS + 1))
        assert await cache.incr(key, LONG_TTL) == PROCESSES * INCRS_PER_PROCESS + 1

    async def test_add_has_exactly_one_winner_across_4_processes(
        self, cache: Cache, cache_factory: CacheOpener
    ) -> None:
        key = unique("lock")
        winners = await in_processes(add_job, cache_factory, key, ADDS_PER_PROCESS)
        assert len(winners) == 1, f"{len(winners)} processes added the key: {winners!r}"
        assert await cache.get(key) == winners[0]
