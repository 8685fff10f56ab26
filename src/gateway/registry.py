"""The in-memory catalogue of each worker, and the backends that serve it.

The hot path reads only `Registry.catalogue` and `Registry.backends`; neither touches the
store. A watcher reloads the catalogue when the store's version moves: it listens on the
cache's `catalogue` channel, where a write announces its change and waits until every
worker has applied it (`gateway.consistency`), and polls the store every
`CATALOGUE_POLL_INTERVAL` (the safety net when the cache is down or does not push).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from gateway.catalogue import Catalogue, Tool
from gateway.consistency import Consistency
from gateway.contracts import JSON, Backend, Cache, FullBackend, UpstreamConfig
from gateway.log_throttle import LogThrottle
from gateway.plugins import Plugins
from gateway.schemas import Check
from gateway.settings import Settings
from gateway.store import PER_CLIENT_SESSION, Store, UpstreamRecord

__all__ = ["CATALOGUE_CHANNEL", "Catalogue", "Registry", "Tool"]

log = structlog.get_logger(__name__)

CATALOGUE_CHANNEL = "catalogue"
VERSION_KEY = "catalogue-version"
"""The newest catalogue version any worker wrote; lists check it so a client that was just
told `list_changed` never reads an older list from a worker that has not heard yet."""


def backend_config(upstream: UpstreamRecord) -> UpstreamConfig:
    return UpstreamConfig(
        name=upstream.name,
        transport=upstream.transport,
        url=upstream.url,
        headers=dict(upstream.headers),
        prefix=upstream.prefix,
        options=upstream.options,
    )


CatalogueListener = Callable[[Catalogue, Catalogue], Awaitable[None]]
NOTES_MAX = 1_000
"""Upstream notifications waiting for the notifier; past this many, new ones are dropped."""


@dataclass(frozen=True, slots=True)
class UpstreamNote:
    """A notification an upstream sent on its own (not about a client's request)."""

    upstream: str
    method: str
    params: JSON


class Registry:
    def __init__(
        self,
        settings: Settings,
        plugins: Plugins,
        store: Store,
        cache: Cache,
        on_change: CatalogueListener,
        consistency: Consistency,
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.store = store
        self.cache = cache
        self.catalogue = Catalogue.empty()
        self.backends: dict[str, Backend] = {}
        self.full_backends: dict[str, FullBackend] = {}
        """The backends that speak the whole protocol (checked once: a runtime Protocol
        check is too slow for every call)."""
        self.per_client: frozenset[str] = frozenset()
        """The upstreams whose clients each get a session of their own (their backends
        here serve the rest: discovery, notifications, subscriptions)."""
        self._configs: dict[str, UpstreamConfig] = {}
        self._checks: dict[tuple[str, bytes], Check] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_change = on_change
        """Called with (old, new) after every reload."""
        self.consistency = consistency
        self.notes: asyncio.Queue[UpstreamNote] = asyncio.Queue(NOTES_MAX)
        self._drops = LogThrottle()
        """Notifications upstreams send on their own, for whoever acts on them."""

    async def start(self) -> None:
        await self.reload(force=True)
        self._spawn(self._poll())
        self._spawn(self._listen())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)
        self.backends.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def changed(self) -> None:
        """Call after a write: reload here now, and return once every worker serves it."""
        await self.reload()
        version = self.catalogue.version

        async def announce(change: str) -> None:
            message = {"version": version, "change": change}
            await self.cache.publish(CATALOGUE_CHANNEL, orjson.dumps(message))

        try:
            await self.cache.set(VERSION_KEY, str(version).encode())
            await self.consistency.everywhere("catalogue", announce)
        except Exception as exc:  # the poller still brings other workers up to date
            log.warning("catalogue change not published; workers will poll", error=str(exc))

    async def ensure_current(self) -> None:
        """Reload first if another worker has published a newer catalogue."""
        try:
            async with asyncio.timeout(self.settings.cache_timeout):
                raw = await self.cache.get(VERSION_KEY)
        except Exception:
            return  # the cache is down: serve what we have
        if raw is not None and int(raw) > self.catalogue.version:
            await self.reload()

    async def reload(self, force: bool = False) -> None:
        async with self._lock:
            if not force and await self.store.catalogue_version() == self.catalogue.version:
                return
            data = await self.store.load_catalogue()
            await self._sync_backends(data.upstreams)
            old, self.catalogue = self.catalogue, Catalogue.build(data, self._checks)
            for index in self.catalogue.search_indexes():
                self._spawn(index.warm())
            log.info(
                "catalogue loaded",
                version=data.version,
                upstreams=len(data.upstreams),
                tools=len(data.tools),
            )
        try:
            await self.on_change(old, self.catalogue)
        except Exception as exc:
            log.warning("catalogue listener failed", error=str(exc))

    async def _sync_backends(self, upstreams: list[UpstreamRecord]) -> None:
        wanted = {u.name: backend_config(u) for u in upstreams}
        self.per_client = frozenset(u.name for u in upstreams if u.session == PER_CLIENT_SESSION)
        retired = [name for name, config in self._configs.items() if wanted.get(name) != config]
        for name in retired:
            backend = self.backends.pop(name, None)
            self.full_backends.pop(name, None)
            self._configs.pop(name, None)
            if backend is not None:
                # Let calls already in flight on the old backend finish.
                self._spawn(self._close_later(backend))
        for name, config in wanted.items():
            if name in self._configs:
                continue
            spec = self.plugins.backend_for(config.transport)
            if spec is None:
                log.warning(
                    "no backend plugin serves this transport",
                    upstream=name,
                    transport=config.transport,
                )
                continue
            backend = spec.factory(config, self.settings)
            await backend.start()
            if isinstance(backend, FullBackend):
                backend.set_listener(functools.partial(self._upstream_note, name))
                self.full_backends[name] = backend
            self.backends[name] = backend
            self._configs[name] = config

    async def _upstream_note(self, upstream: str, method: str, params: JSON) -> None:
        try:
            self.notes.put_nowait(UpstreamNote(upstream, method, params))
        except asyncio.QueueFull:
            dropped = self._drops.count(upstream)
            if dropped:
                log.warning(
                    "upstream notifications dropped: the queue is full",
                    upstream=upstream,
                    notification=method,
                    dropped=dropped,
                )

    async def _close_later(self, backend: Backend) -> None:
        try:
            await asyncio.sleep(self.settings.tool_timeout)
        finally:  # also when `close()` cancels the wait: the gateway is stopping
            await backend.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalogue_poll_interval)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("catalogue poll failed", error=str(exc))

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self.cache.subscribe(CATALOGUE_CHANNEL):
                    announced = _announcement(message)
                    log.info("catalogue invalidated", version=announced.get("version"))
                    try:
                        await self.reload()
                    except Exception as exc:  # the poller retries
                        log.warning("catalogue reload failed", error=str(exc))
                    else:
                        await self.consistency.applied(announced.get("change"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("catalogue subscription lost; retrying", error=str(exc))
            await asyncio.sleep(1.0)


def _announcement(message: bytes) -> JSON:
    """A `catalogue` message: the version and the change id a writer waits on."""
    try:
        announced = orjson.loads(message)
    except orjson.JSONDecodeError:
        return {}
    return announced if isinstance(announced, dict) else {}
