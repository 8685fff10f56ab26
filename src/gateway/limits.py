"""Rate limits: requests per minute per caller (`RATE_LIMIT_PER_MINUTE`) and per tool
(`TOOL_RATE_LIMIT_PER_MINUTE`, or a tool's own `rate_limit`).

Fixed one-minute windows counted with the cache's atomic `incr`, so the limit holds across
workers and instances that share the cache. A caller over a limit gets JSON-RPC error
-32029 with `retryAfter` seconds. If the cache is down, limits fail open: availability
over strictness, with a warning and an error count.
"""

from __future__ import annotations

import time

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.jsonrpc import RPCError
from gateway.metrics import RATE_LIMITED

WINDOW = 60.0


class RateLimited(RPCError):
    """A request refused for now: -32029, with the limit and `retryAfter` seconds."""

    def __init__(self, message: str, limit: int, retry_after: int) -> None:
        super().__init__(jsonrpc.RATE_LIMITED, message, {"retryAfter": retry_after, "limit": limit})
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, use: CacheUse) -> None:
        self.use = use

    async def hit(self, scope: str, what: str, limit: int) -> None:
        """Count one request against `scope`; raise `RateLimited` past `limit`."""
        if limit <= 0:
            return
        now = time.time()
        window = int(now // WINDOW)
        try:
            count = await self.use.run(self.use.cache.incr(f"limit:{scope}:{window}", WINDOW))
        except CacheUnavailable:
            return
        if count > limit:
            self.use.count("limited")
            RATE_LIMITED(scope.partition(":")[0]).inc()
            retry_after = max(1, int((window + 1) * WINDOW - now) + 1)
            raise RateLimited(
                f"Rate limit exceeded: {what} allows {limit} requests per minute; "
                f"retry after {retry_after}s",
                limit,
                retry_after,
            )
