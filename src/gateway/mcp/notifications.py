"""Acting on what upstreams say on their own, from the registry's queue of notes.

- An upstream said its tools, resources or prompts changed: re-discover it; the resulting
  catalogue change then reaches every client through the registry's `on_change` (the hub).
- An upstream said a resource was updated: publish it, so every worker's subscribers hear.

Every worker holds its own session with each upstream and hears its notifications, so a
re-discovery is bounded twice: in a worker, one at a time per upstream, and the notes that
come meanwhile make one more, started `REFRESH_SPACING` after the last; across workers,
the one that claims `upstream-refresh:<name>` in the cache (for `REFRESH_CLAIM_SECONDS`)
re-discovers and the others, which heard the same note, leave it to that one. Without the
cache every worker re-discovers, and only a change is written.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable

import structlog

from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.mcp.hub import Hub
from gateway.registry import UpstreamNote

log = structlog.get_logger(__name__)

Refresh = Callable[[str], Awaitable[object]]

REFRESH_SPACING = 0.5
"""Seconds between the starts of two re-discoveries of one upstream by one worker."""
REFRESH_CLAIM_SECONDS = 2.0
"""How long the worker that re-discovers an upstream keeps the others from doing it too."""


def claim_key(upstream: str) -> str:
    return f"upstream-refresh:{upstream}"


class Notifier:
    def __init__(
        self,
        hub: Hub,
        notes: asyncio.Queue[UpstreamNote],
        refresh: Refresh,
        use: CacheUse | None = None,
    ) -> None:
        self.hub = hub
        self.notes = notes
        self.refresh = refresh
        self.use = use
        """Where workers claim a re-discovery; None: this worker re-discovers every time."""
        self.identity = f"{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._consume())

    async def close(self) -> None:
        tasks = [*self._refreshing.values(), *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _consume(self) -> None:
        while True:
            note = await self.notes.get()
            try:
                await self.upstream_said(note)
            except Exception as exc:
                log.warning("upstream notification not handled", error=str(exc))

    async def upstream_said(self, note: UpstreamNote) -> None:
        if note.method.endswith("/list_changed"):
            log.debug("upstream list changed", upstream=note.upstream, notification=note.method)
            self._refresh(note.upstream)
        elif note.method == "notifications/resources/updated" and isinstance(
            note.params.get("uri"), str
        ):
            await self.hub.publish({"kind": "resource-updated", "uri": note.params["uri"]})

    def _refresh(self, upstream: str) -> None:
        if upstream in self._refreshing:
            self._again.add(upstream)
            return
        self._refreshing[upstream] = asyncio.create_task(self._run(upstream))

    async def _run(self, upstream: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._again.discard(upstream)
                started = loop.time()
                try:
                    if await self._claim(upstream):
                        log.info("re-discovering after list_changed", upstream=upstream)
                        await self.refresh(upstream)
                except Exception as exc:
                    log.warning(
                        "refresh after list_changed failed", upstream=upstream, error=str(exc)
                    )
                if upstream not in self._again:
                    return
                # A noisy upstream: what it said meanwhile makes one more, a little later.
                await asyncio.sleep(max(0.0, started + REFRESH_SPACING - loop.time()))
        finally:
            self._refreshing.pop(upstream, None)

    async def _claim(self, upstream: str) -> bool:
        """True when this worker is the one to re-discover `upstream` now: it claimed it,
        or holds the claim already; False when another worker does."""
        if self.use is None:
            return True
        cache, key, me = self.use.cache, claim_key(upstream), self.identity
        try:
            if await self.use.run(cache.add(key, me, REFRESH_CLAIM_SECONDS)):
                return True
            if await self.use.run(cache.get(key)) != me:
                log.debug("refresh left to another worker", upstream=upstream)
                return False
            await self.use.run(cache.set(key, me, REFRESH_CLAIM_SECONDS))
            return True
        except CacheUnavailable:
            return True  # re-discovering twice is better than not at all
