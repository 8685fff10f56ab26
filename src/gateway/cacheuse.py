"""How the gateway uses its cache: every call bounded by `CACHE_TIMEOUT`, counted by use
and outcome, and failures turned into `CacheUnavailable` so each use can decide to degrade.

What degrades when the cache is down (documented in the README):
- the tool result cache answers "miss" and calls go to the upstream;
- rate limits fail open (the call is allowed, a warning is logged);
- leader election keeps the current leader's view until the cache returns;
- catalogue changes still reach every worker through the store poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import structlog

from gateway.contracts import Cache
from gateway.metrics import CACHE_OPERATION_SECONDS, CACHE_OPERATIONS

log = structlog.get_logger(__name__)
T = TypeVar("T")


class CacheUnavailable(Exception):
    """The cache did not answer in time or failed."""


class CacheUse:
    """The cache as one use (results, limits, leader, sessions) sees it."""

    def __init__(self, cache: Cache, cache_type: str, use: str, timeout: float) -> None:
        self.cache = cache
        self.cache_type = cache_type
        self.use = use
        self.timeout = timeout

    def count(self, outcome: str) -> None:
        CACHE_OPERATIONS(self.cache_type, self.use, outcome).inc()

    async def run(self, operation: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                done = await operation
        except Exception as exc:
            self.count("error")
            log.warning(
                "cache operation failed",
                cache=self.cache_type,
                use=self.use,
                error=str(exc) or type(exc).__name__,
            )
            raise CacheUnavailable(str(exc)) from None
        CACHE_OPERATION_SECONDS(self.cache_type, self.use).observe(time.perf_counter() - started)
        return done
