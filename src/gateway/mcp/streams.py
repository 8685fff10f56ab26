"""The kinds of client stream: a session's GET stream (Streamable HTTP, with event ids and
resumption), a legacy HTTP+SSE stream, and a 2026 `subscriptions/listen` stream."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.mcp import sse
from gateway.mcp.hub import LIST_CHANGED, ClientStream
from gateway.mcp.versions import META_SUBSCRIPTION
from gateway.sessions import SessionStore

JSON = dict[str, Any]
EVENT_TTL = 300.0
"""Seconds a sent event stays available for a client resuming with `Last-Event-ID`."""


class EventLog:
    """Numbered events per session in the cache, so a client can resume on any worker."""

    def __init__(self, use: CacheUse) -> None:
        self.use = use

    async def append(self, session_id: str, data: bytes) -> int | None:
        try:
            number = await self.use.run(self.use.cache.incr(f"events:{session_id}", EVENT_TTL))
            await self.use.run(self.use.cache.set(f"event:{session_id}:{number}", data, EVENT_TTL))
        except CacheUnavailable:
            return None
        return number

    async def since(self, session_id: str, last: int) -> list[tuple[int, bytes]]:
        try:
            raw = await self.use.run(self.use.cache.get(f"events:{session_id}"))
            newest = int(raw) if raw is not None else 0
            found = []
            for number in range(last + 1, newest + 1):
                data = await self.use.run(self.use.cache.get(f"event:{session_id}:{number}"))
                if data is not None:
                    found.append((number, data))
        except (CacheUnavailable, ValueError):
            return []
        return found


class _SessionBound(ClientStream):
    def __init__(
        self, stream: sse.EventStream, session_id: str, server: str | None, sessions: SessionStore
    ) -> None:
        self.stream = stream
        self.session_id = session_id
        self.server = server
        self.sessions = sessions
        self.closed = asyncio.Event()

    async def write(self, message: JSON) -> None:
        raise NotImplementedError

    async def deliver(self, message: JSON) -> None:
        await self._guarded(message)

    async def list_changed(self, kind: str) -> None:
        await self._guarded({"jsonrpc": "2.0", "method": LIST_CHANGED[kind]})

    async def resource_updated(self, uri: str) -> None:
        try:
            session = await self.sessions.get(self.session_id) if self.session_id else None
        except CacheUnavailable:
            return
        if session is not None and uri in session.subscriptions:
            await self._guarded(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/resources/updated",
                    "params": {"uri": uri},
                }
            )

    async def _guarded(self, message: JSON) -> None:
        if self.closed.is_set():
            return
        try:
            await self.write(message)
        except (ConnectionError, RuntimeError):
            self.closed.set()

    async def close(self) -> None:
        self.closed.set()
        await self.stream.close()


class SessionStream(_SessionBound):
    """The standalone GET stream of a Streamable HTTP session."""

    def __init__(
        self,
        stream: sse.EventStream,
        session_id: str,
        server: str | None,
        sessions: SessionStore,
        events: EventLog,
    ) -> None:
        super().__init__(stream, session_id, server, sessions)
        self.events = events

    async def write(self, message: JSON) -> None:
        data = orjson.dumps(message)
        assert self.session_id is not None
        number = await self.events.append(self.session_id, data)
        await self.stream.send(
            sse.event(data, name="message", event_id=None if number is None else str(number))
        )

    async def replay(self, last_event_id: str) -> None:
        try:
            last = int(last_event_id)
        except ValueError:
            return
        assert self.session_id is not None
        for number, data in await self.events.since(self.session_id, last):
            await self.stream.send(sse.event(data, name="message", event_id=str(number)))


class LegacyStream(_SessionBound):
    """The one stream of a 2024-11-05 HTTP+SSE session: responses go here too."""

    async def write(self, message: JSON) -> None:
        await self.stream.send(sse.message_event(message))


class ListenStream(ClientStream):
    """A 2026-07-28 `subscriptions/listen` stream: only what the client asked for, each frame
    tagged with the listen request's id."""

    def __init__(
        self, stream: sse.EventStream, subscription_id: Any, server: str | None, flags: JSON
    ) -> None:
        self.stream = stream
        self.subscription_id = subscription_id
        self.server = server
        self.flags = flags
        self.closed = asyncio.Event()

    @staticmethod
    def honoured(requested: JSON) -> JSON:
        honoured: JSON = {}
        for flag in ("toolsListChanged", "promptsListChanged", "resourcesListChanged"):
            if requested.get(flag) is True:
                honoured[flag] = True
        uris = requested.get("resourceSubscriptions")
        if isinstance(uris, list) and all(isinstance(u, str) for u in uris) and uris:
            honoured["resourceSubscriptions"] = uris
        return honoured

    async def send(self, method: str, params: JSON | None = None) -> None:
        if self.closed.is_set():
            return
        body = {**(params or {}), "_meta": {META_SUBSCRIPTION: self.subscription_id}}
        try:
            await self.stream.send(
                sse.message_event({"jsonrpc": "2.0", "method": method, "params": body})
            )
        except (ConnectionError, RuntimeError):
            self.closed.set()

    async def list_changed(self, kind: str) -> None:
        if self.flags.get(f"{kind}ListChanged"):
            await self.send(LIST_CHANGED[kind])

    async def resource_updated(self, uri: str) -> None:
        subscribed = self.flags.get("resourceSubscriptions", ())
        if any(uri == s or uri.startswith(s.rstrip("/") + "/") for s in subscribed):
            await self.send("notifications/resources/updated", {"uri": uri})

    async def close(self) -> None:
        self.closed.set()
        await self.stream.close()
