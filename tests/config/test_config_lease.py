"""The store's configuration lease: one holder at a time across processes sharing the
store, released on leaving, and taken over once a dead holder's time is up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.config.managed import Lease, LeaseBusy, managed, set_managed
from gateway.store import Store, open_store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = open_store(database_url, "lease-test-secret")
    await opened.start()
    yield opened
    await opened.close()


async def test_a_second_holder_waits_for_the_first_to_release(store: Store) -> None:
    order: list[str] = []

    async def hold(name: str, seconds: float) -> None:
        async with Lease(store).held(wait=10):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    first = asyncio.create_task(hold("first", 0.5))
    await asyncio.sleep(0.1)
    await hold("second", 0)
    await first
    assert order == ["first in", "first out", "second in", "second out"]


async def test_a_lease_held_past_the_wait_raises_lease_busy(store: Store) -> None:
    async with Lease(store).held(wait=1):
        with pytest.raises(LeaseBusy, match="stayed taken"):
            async with Lease(store).held(wait=0.3):
                pass


async def test_a_dead_holders_lease_is_taken_once_its_time_is_up(store: Store) -> None:
    dead = Lease(store, ttl=0.5)
    assert await dead.take()  # and never released
    assert not await Lease(store).take()
    await asyncio.sleep(0.6)
    assert await Lease(store).take()


async def test_the_managed_set_is_replaced_whole(store: Store) -> None:
    await set_managed(store, [("upstream", "a"), ("server", "s")])
    await set_managed(store, [("upstream", "b")])
    assert await managed(store) == frozenset({("upstream", "b")})
