"""Waiting, inside a test, for something to become true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.02,
) -> float:
    """Poll `check` (plain or async) every `every` seconds until it holds; the seconds that
    took. Fails the test naming `what` if it does not hold within `timeout` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {timeout:g}s")
        await asyncio.sleep(every)
