"""Acting on what upstreams say on their own, from the registry's queue of notes.

- An upstream said its tools, resources or prompts changed: re-discover it (once at a
  time per upstream); the resulting catalogue change then reaches every client through
  the registry's `on_change` (the hub).
- An upstream said a resource was updated: publish it, so every worker's subscribers hear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from gateway.mcp.hub import Hub
from gateway.registry import UpstreamNote

log = structlog.get_logger(__name__)

Refresh = Callable[[str], Awaitable[object]]


class Notifier:
    def __init__(self, hub: Hub, notes: asyncio.Queue[UpstreamNote], refresh: Refresh) -> None:
        self.hub = hub
        self.notes = notes
        self.refresh = refresh
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
            log.info("upstream list changed", upstream=note.upstream, notification=note.method)
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
        try:
            while True:
                self._again.discard(upstream)
                try:
                    await self.refresh(upstream)
                except Exception as exc:
                    log.warning(
                        "refresh after list_changed failed", upstream=upstream, error=str(exc)
                    )
                if upstream not in self._again:
                    return
        finally:
            self._refreshing.pop(upstream, None)
