"""What the tests share: their time limits and sizes, unique names, and waiting helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from gateway.contracts import Cache

T = TypeVar("T")

SHORT_TTL = 0.3
"""Seconds; long enough for a few round trips, short enough to wait for."""
LONG_TTL = 60.0
"""Seconds; outlives any test."""
EXPIRY_DEADLINE = 3.0
"""Seconds after a short TTL by which the key must be gone."""
EARLY_TOLERANCE = 0.05
"""Seconds a key may vanish before its TTL, for clocks of different resolution."""
DELIVERY_DEADLINE = 1.0
"""Seconds within which a published message reaches a listening subscriber."""
SUBSCRIBE_DEADLINE = 10.0
"""Seconds a new subscription may take to start hearing messages."""
RECOVERY_DEADLINE = 5.0
"""Seconds within which the cache works again after its connections drop."""
POLL_INTERVAL = 0.02
CONCURRENCY = 50


def unique(name: str) -> str:
    """A key or channel of this test's own, in case the fixture reuses a prefix."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def now() -> float:
    """The running loop's clock, which every deadline here is measured on."""
    return asyncio.get_running_loop().time()


async def gone_after(cache: Cache, key: str, started: float) -> float:
    """Seconds from `started` until `key` reads as absent; fails past the deadline."""
    while now() - started < SHORT_TTL + EXPIRY_DEADLINE:
        if await cache.get(key) is None:
            return now() - started
        await asyncio.sleep(POLL_INTERVAL)
    pytest.fail(f"key {key!r} still present {SHORT_TTL + EXPIRY_DEADLINE:g} s after set")


async def concurrent_adds(cache: Cache, key: str, values: list[bytes]) -> list[bytes]:
    """Add every value to `key` at once; the values whose `add` won."""
    won = await asyncio.gather(*(cache.add(key, value, LONG_TTL) for value in values))
    return [value for value, added in zip(values, won, strict=True) if added]


async def eventually(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """The result of `operation` once it stops raising, within `RECOVERY_DEADLINE`."""
    deadline = now() + RECOVERY_DEADLINE
    while True:
        try:
            return await operation()
        except Exception as exc:
            if now() > deadline:
                pytest.fail(f"{what} still fails {RECOVERY_DEADLINE:g} s after the drop: {exc!r}")
        await asyncio.sleep(0.1)
