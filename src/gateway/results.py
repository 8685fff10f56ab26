"""The tool result cache: opt-in per tool (`cache_ttl`), keyed by tool, canonical
arguments and caller.

The caller is part of the key because a tool's result may depend on who asks (an upstream
may see the caller through forwarded identity, or a tool may act for the caller). Two
callers with different JWT subjects never share an entry; anonymous callers share one.
Errors (`isError: true`) are never stored. Hits and misses show in the result's
`_meta["aio-mcp-gateway/cache"]` and in debug logs. A cache outage is a miss.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import structlog

from gateway.cacheuse import CacheUnavailable, CacheUse

log = structlog.get_logger(__name__)

META_KEY = "aio-mcp-gateway/cache"


def result_key(tool: str, arguments: dict[str, Any], subject: str) -> str:
    canonical = orjson.dumps([tool, subject, arguments], option=orjson.OPT_SORT_KEYS)
    return f"result:{tool}:{hashlib.sha256(canonical).hexdigest()}"


def _marked(result: dict[str, Any], outcome: str) -> dict[str, Any]:
    meta = dict(result.get("_meta") or {})
    meta[META_KEY] = outcome
    return {**result, "_meta": meta}


class ResultCache:
    def __init__(self, use: CacheUse) -> None:
        self.use = use

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.use.run(self.use.cache.get(key))
        except CacheUnavailable:
            return None
        if raw is None:
            self.use.count("miss")
            return None
        self.use.count("hit")
        log.debug("tool result cache hit", key=key)
        cached: dict[str, Any] = orjson.loads(raw)
        return _marked(cached, "hit")

    async def put(self, key: str, result: dict[str, Any], ttl: float) -> dict[str, Any]:
        """Store a successful result; return it marked as a miss."""
        if result.get("isError"):
            return result
        try:
            await self.use.run(self.use.cache.set(key, orjson.dumps(result), ttl))
            self.use.count("write")
        except CacheUnavailable:
            pass
        log.debug("tool result cache miss", key=key)
        return _marked(result, "miss")
