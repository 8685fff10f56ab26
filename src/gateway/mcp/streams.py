"""The kinds of client stream: a session's GET stream (Streamable HTTP, with event ids and
resumption), a legacy HTTP+SSE stream, and a 2026 `subscriptions/listen` stream."""

from __future__ import annotations

import asyncio
import secrets
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
    """Sent events per stream in the cache, so a client can resume on any worker.

    Event ids are `<epoch>-<n>`: the epoch names one stream (ids stay unique across a
    session's streams, and a resumption replays only its own stream), `n` counts that
    stream's events. No shared counter is needed: only the worker holding a stream writes.
    """

    MAX_REPLAY = 10_000

    def __init__(self, use: CacheUse) -> None:
        self.use = use

    @staticmethod
    def key(session_id: str, event_id: str) -> str:
        return f"event:{session_id}:{event_id}"

    async def keep(self, session_id: str, event_id: str, data: bytes) -> None:
        try:
            await self.use.run(self.use.cache.set(self.key(session_id, event_id), data, EVENT_TTL))
        except CacheUnavailable:
            pass  # the event is still sent; it just cannot be replayed

    async def after(self, session_id: str, epoch: str, last: int) -> list[tuple[int, bytes]]:
        found: list[tuple[int, bytes]] = []
        for number in range(last + 1, last + 1 + self.MAX_REPLAY):
            try:
                data = await self.use.run(
                    self.use.cache.get(self.key(session_id, f"{epoch}-{number}"))
                )
            except CacheUnavailable:
                break
            if data is None:
                break
            found.append((number, data))
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
        self.epoch = secrets.token_hex(6)
        self.count = 0
        self._lock = asyncio.Lock()

    async def write(self, message: JSON) -> None:
        data = orjson.dumps(message)
        assert self.session_id is not None
        async with self._lock:
            self.count += 1
            event_id = f"{self.epoch}-{self.count}"
            await self.events.keep(self.session_id, event_id, data)
            await self.stream.send(sse.event(data, name="message", event_id=event_id))

    async def replay(self, last_event_id: str) -> None:
        """Resume a stream: send what it missed, then carry on with its numbering. Live
        messages wait for the replay, so order is kept."""
        epoch, _, number = last_event_id.rpartition("-")
        if not epoch or not number.isdigit():
            return
        assert self.session_id is not None
        async with self._lock:
            self.epoch, self.count = epoch, int(number)
            for count, data in await self.events.after(self.session_id, epoch, self.count):
                event_id = f"{epoch}-{count}"
                await self.stream.send(sse.event(data, name="message", event_id=event_id))
                self.count = count


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
