"""`within()`: the hot path's cheap time limit behaves like `asyncio.timeout`."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.deadlines import TICK, within


async def test_a_block_that_overruns_raises_timeout_error_soon_after_its_limit() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with within(0.1):
            await asyncio.sleep(10)
    assert time.monotonic() - started < 0.1 + TICK + 1.0


async def test_a_block_that_finishes_in_time_is_untouched() -> None:
    async with within(5):
        await asyncio.sleep(0.01)
    await asyncio.sleep(TICK * 3)  # no late cancellation arrives afterwards


async def test_a_cancellation_from_outside_passes_through_as_cancellation() -> None:
    async def guarded() -> None:
        async with within(5):
            await asyncio.sleep(10)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_limits_the_inner_one_fires_first() -> None:
    with pytest.raises(TimeoutError):
        async with within(5):
            async with within(0.05):
                await asyncio.sleep(10)
        pytest.fail("the inner TimeoutError must leave the outer block")


async def test_many_concurrent_limits_each_fire_on_their_own_task() -> None:
    async def bounded(seconds: float) -> str:
        try:
            async with within(seconds):
                await asyncio.sleep(0.3)
            return "finished"
        except TimeoutError:
            return "timed out"

    outcomes = await asyncio.gather(*(bounded(s) for s in (0.05, 2.0, 0.05, 2.0)))
    assert outcomes == ["timed out", "finished", "timed out", "finished"]


async def test_nothing_is_scheduled_once_no_limit_is_in_force() -> None:
    from gateway import deadlines

    async with within(1):
        pass
    sweeper = deadlines._sweepers[asyncio.get_running_loop()]
    await asyncio.sleep(TICK * 3)
    assert sweeper.timer is None
