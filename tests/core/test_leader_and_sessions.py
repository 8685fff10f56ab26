"""Leader election and session records, on one cache shared by several workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.cacheuse import CacheUse
from gateway.leader import LeaderElection
from gateway.sessions import SessionStore
from gateway_plugins.cache_memory import MemoryCache
from tests.support.waiting import eventually


@pytest.fixture
async def use() -> AsyncIterator[CacheUse]:
    cache = MemoryCache(max_items=1000, prefix="t")
    await cache.start()
    yield CacheUse(cache, "memory", "test", timeout=1.0)
    await cache.close()


async def test_exactly_one_of_many_workers_is_leader(use: CacheUse) -> None:
    elections = [LeaderElection(use, ttl=0.6) for _ in range(5)]
    for election in elections:
        await election.start()
    try:
        await eventually(lambda: any(e.is_leader for e in elections), 1.0, "a leader")
        for _ in range(10):
            assert sum(e.is_leader for e in elections) == 1
            await asyncio.sleep(0.1)
    finally:
        for election in elections:
            await election.close()


async def test_another_worker_takes_over_within_a_ttl_when_the_leader_dies(use: CacheUse) -> None:
    first, second = LeaderElection(use, ttl=0.6), LeaderElection(use, ttl=0.6)
    await first.start()
    await eventually(lambda: first.is_leader, 1.0, "the first leads")
    await second.start()
    # A dead worker does not clean up: stop its campaign without releasing the key.
    for task in first._tasks:
        task.cancel()
    try:
        took = await eventually(lambda: second.is_leader, 1.5, "the second leads")
        assert took <= 0.6 + 0.6 / 3 + 0.2
    finally:
        await second.close()


async def test_only_the_leader_runs_background_jobs(use: CacheUse) -> None:
    runs: list[str] = []
    elections = [LeaderElection(use, ttl=0.6) for _ in range(3)]
    for index, election in enumerate(elections):
        election.add_job("job", 0.05, lambda index=index: _record(runs, str(index)))
        await election.start()
    await asyncio.sleep(0.6)
    for election in elections:
        await election.close()
    assert runs and len(set(runs)) == 1


async def _record(runs: list[str], who: str) -> None:
    runs.append(who)


async def test_a_session_made_by_one_worker_is_read_by_another(use: CacheUse) -> None:
    mine, theirs = SessionStore(use, ttl=60), SessionStore(use, ttl=60)
    created = await mine.create(
        protocol_version="2025-06-18",
        subject="alice",
        client_info={"name": "c"},
        subscriptions=("r://1",),
    )
    assert await theirs.get(created.id) == created
    await theirs.delete(created.id)
    assert await theirs.get(created.id) is None
    # The other worker drops its short-lived copy when the hub relays `session-closed`.
    mine.forget(created.id)
    assert await mine.get(created.id) is None


async def test_session_ids_are_long_visible_ascii(use: CacheUse) -> None:
    created = await SessionStore(use, ttl=60).create(protocol_version="x", subject="s")
    assert len(created.id) >= 32 and created.id.isascii() and created.id.isprintable()
