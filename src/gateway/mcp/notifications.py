"""Turning changes into notifications for clients.

- The catalogue changed (any worker reloaded): tell this worker's open streams which
  lists changed.
- An upstream said its tools, resources or prompts changed: re-discover it (once at a
  time per upstream); the resulting catalogue change then reaches every client.
- An upstream said a resource was updated: publish it, so every worker's subscribers hear.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gateway.catalogue import Catalogue
from gateway.mcp.hub import Hub
from gateway.registry import Registry
from gateway.upstreams import UpstreamService

log = structlog.get_logger(__name__)

JSON = dict[str, Any]


class Notifier:
    def __init__(self, hub: Hub, registry: Registry, upstreams: UpstreamService) -> None:
        self.hub = hub
        self.upstreams = upstreams
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._fanouts: set[asyncio.Task[None]] = set()
        registry.listeners.append(self.catalogue_changed)
        registry.upstream_listener = self.upstream_said

    async def catalogue_changed(self, old: Catalogue, new: Catalogue) -> None:
        if old.version >= 0:
            # In the background: the write that caused it should not wait for every stream.
            task = asyncio.create_task(self.hub.catalogue_changed(old, new))
            self._fanouts.add(task)
            task.add_done_callback(self._fanouts.discard)

    async def upstream_said(self, upstream: str, method: str, params: JSON) -> None:
        if method.endswith("/list_changed"):
            log.info("upstream list changed", upstream=upstream, notification=method)
            self._refresh(upstream)
        elif method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
            await self.hub.publish({"kind": "resource-updated", "uri": params["uri"]})

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
                    await self.upstreams.refresh(upstream)
                except Exception as exc:
                    log.warning(
                        "refresh after list_changed failed", upstream=upstream, error=str(exc)
                    )
                if upstream not in self._again:
                    return
        finally:
            self._refreshing.pop(upstream, None)

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)
