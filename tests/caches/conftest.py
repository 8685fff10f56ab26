"""What the cache tests share: the stand-in for the store a cache does not use, and the
Redis housekeeping that keeps tests sharing one Redis server apart."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

# The memory and redis caches never touch the store their factory receives.
NO_STORE: Any = None


async def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete what a test left under `prefix:`, since the Redis server outlives the run."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


async def kill_clients(redis_url: str, name: str, types: tuple[str, ...]) -> int:
    """`CLIENT KILL` every connection called `name` of the given types; how many.

    Other test runs share this Redis, so connections are picked by name rather than
    with a blanket `CLIENT KILL TYPE normal`.
    """
    admin = aioredis.Redis.from_url(redis_url)
    try:
        killed = 0
        for client in await admin.client_list():
            if client["name"] == name and _client_type(client) in types:
                killed += await admin.client_kill_filter(_id=client["id"])
        return killed
    finally:
        await admin.aclose()


def _client_type(client: dict[str, Any]) -> str:
    # CLIENT LIST marks a subscriber with the flag P (or counts its subscriptions).
    subscribed = "P" in client.get("flags", "") or int(client.get("sub", 0)) > 0
    return "pubsub" if subscribed else "normal"
