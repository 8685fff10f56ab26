"""Counters and locks: atomic `incr` and `add` under concurrent tasks, and their TTLs."""

from __future__ import annotations

import asyncio

from gateway.contracts import Cache
from gateway.testing.cache_conformance.support import (
    CONCURRENCY,
    EARLY_TOLERANCE,
    EXPIRY_DEADLINE,
    LONG_TTL,
    POLL_INTERVAL,
    SHORT_TTL,
    concurrent_adds,
    gone_after,
    now,
    unique,
)


class CounterAndLockTests:
    """`incr` counts windows for rate limits; `add` takes locks and leases."""

    async def test_incr_returns_1_to_50_exactly_under_50_concurrent_tasks(
        self, cache: Cache
    ) -> None:
        key = unique("counter")
        values = await asyncio.gather(*(cache.incr(key, LONG_TTL) for _ in range(CONCURRENCY)))
        assert sorted(values) == list(range(1, CONCURRENCY + 1))

    async def test_incr_keeps_the_ttl_of_the_first_increment_and_restarts_after_expiry(
        self, cache: Cache
    ) -> None:
        key = unique("window")
        started = now()
        assert await cache.incr(key, SHORT_TTL) == 1
        assert await cache.incr(key, LONG_TTL) == 2
        assert await gone_after(cache, key, started) >= SHORT_TTL - EARLY_TOLERANCE
        assert await cache.incr(key, LONG_TTL) == 1

    async def test_add_has_exactly_one_winner_among_50_concurrent_tasks(self, cache: Cache) -> None:
        key = unique("lock")
        values = [f"task {number}".encode() for number in range(CONCURRENCY)]
        winners = await concurrent_adds(cache, key, values)
        assert len(winners) == 1
        assert await cache.get(key) == winners[0]

    async def test_add_is_refused_while_held_and_succeeds_again_after_the_ttl(
        self, cache: Cache
    ) -> None:
        key = unique("lease")
        started = now()
        assert await cache.add(key, b"first", SHORT_TTL) is True
        assert await cache.add(key, b"second", SHORT_TTL) is False
        assert await cache.get(key) == b"first"
        while not await cache.add(key, b"third", LONG_TTL):
            assert now() - started < SHORT_TTL + EXPIRY_DEADLINE, "the key never expired"
            await asyncio.sleep(POLL_INTERVAL)
        assert now() - started >= SHORT_TTL - EARLY_TOLERANCE
        assert await cache.get(key) == b"third"

    async def test_add_succeeds_again_after_delete(self, cache: Cache) -> None:
        key = unique("released")
        assert await cache.add(key, b"first", LONG_TTL) is True
        await cache.delete(key)
        assert await cache.add(key, b"second", LONG_TTL) is True
        assert await cache.get(key) == b"second"
