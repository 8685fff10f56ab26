"""The kinds of client stream: a session's GET stream (Streamable HTTP, with event ids and
resumption), the resumable response stream of a POST and the GET stream resuming it, a
legacy HTTP+SSE stream, and a 2026 `subscriptions/listen` stream."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.jsonrpc import Id
from gateway.mcp import sse
from gateway.mcp.hub import LIST_CHANGED, ClientStream, Hub
from gateway.mcp.versions import META_SUBSCRIPTION
from gateway.sessions import SessionStore

JSON = dict[str, Any]
EVENT_TTL = 300.0
"""Seconds a sent event stays available for a client resuming with `Last-Event-ID`."""
RESPONSE_EPOCH = "r"
"""How the epoch of a POST's response stream starts; a GET stream's epoch is hex."""
CATCH_UP_SECONDS = 1.0
"""How often a resumed response stream also reads the event log, for events the hub lost."""
INLINE_BYTES = 2048
"""Events of a response stream larger than this reach another worker's resumed stream
through the event log only: some caches carry only small events between workers."""
DEADLINE_SLACK = 2.0
"""Seconds past its call's deadline a resumed response stream still waits for the answer
(for it to travel, and for clocks that differ between machines)."""


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """What any worker needs to resume a POST's response stream: the request it answers, and
    the wall-clock time by which its call has answered or been ended."""

    request_id: Id
    deadline: float

    def to_bytes(self) -> bytes:
        return orjson.dumps({"id": self.request_id, "deadline": self.deadline})

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseRecord:
        data = orjson.loads(raw)
        return cls(data["id"], float(data["deadline"]))


def response_event(last_event_id: str) -> tuple[str, int] | None:
    """(epoch, number) when `last_event_id` names an event of a POST's response stream."""
    epoch, _, number = last_event_id.rpartition("-")
    if epoch.startswith(RESPONSE_EPOCH) and number.isdigit():
        return epoch, int(number)
    return None


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

    async def open_response(self, session_id: str, epoch: str, record: ResponseRecord) -> None:
        """Record a response stream, for as long as its events may still be asked for."""
        ttl = max(0.0, record.deadline - time.time()) + EVENT_TTL
        key = f"response:{session_id}:{epoch}"
        try:
            await self.use.run(self.use.cache.set(key, record.to_bytes(), ttl))
        except CacheUnavailable:
            pass  # the stream is still served; it just cannot be resumed

    async def response(self, session_id: str, epoch: str) -> ResponseRecord | None:
        try:
            raw = await self.use.run(self.use.cache.get(f"response:{session_id}:{epoch}"))
        except CacheUnavailable:
            return None
        return None if raw is None else ResponseRecord.from_bytes(raw)

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

    async def start(self, last_event_id: str | None, prime: bool) -> None:
        """Begin the stream: with a priming event when `prime` (2025-11-25), then, resuming
        from `last_event_id`, with what it missed, carrying on with its numbering. Live
        messages wait for this, so order is kept."""
        epoch, _, number = (last_event_id or "").rpartition("-")
        resuming = bool(epoch) and number.isdigit()
        assert self.session_id is not None
        async with self._lock:
            if resuming:
                self.epoch, self.count = epoch, int(number)
            if prime:
                await self.stream.send(sse.priming(f"{self.epoch}-{self.count}"))
            if not resuming:
                return
            for count, data in await self.events.after(self.session_id, epoch, self.count):
                event_id = f"{epoch}-{count}"
                await self.stream.send(sse.event(data, name="message", event_id=event_id))
                self.count = count


class ResponseStream:
    """The SSE answer to one POST of a 2025-11-25 session, which the client may resume.

    Its events carry ids `<epoch>-<n>` and are kept in the event log. When its client goes
    away the call runs on: each event is still kept, and goes through the hub to whichever
    worker holds a stream that resumed this one (`ResumedResponse`).
    """

    def __init__(self, hub: Hub, events: EventLog, session_id: str, record: ResponseRecord) -> None:
        self.hub = hub
        self.events = events
        self.session_id = session_id
        self.record = record
        self.epoch = RESPONSE_EPOCH + secrets.token_hex(6)
        self.count = 0
        self.live: sse.EventStream | None = None
        self._lock = asyncio.Lock()

    async def start(self, stream: sse.EventStream) -> None:
        """Record the stream, so any worker can resume it, then prime the client with it."""
        await self.events.open_response(self.session_id, self.epoch, self.record)
        self.live = stream
        await self._write(sse.priming(f"{self.epoch}-0"))

    async def send(self, message: JSON) -> None:
        data = orjson.dumps(message)
        async with self._lock:
            self.count += 1
            event_id = f"{self.epoch}-{self.count}"
            await self.events.keep(self.session_id, event_id, data)
            if not await self._write(sse.event(data, name="message", event_id=event_id)):
                await self.hub.send_to_follower(
                    self.session_id,
                    self.epoch,
                    self.count,
                    message,
                    inline=len(data) <= INLINE_BYTES,
                )

    async def _write(self, chunk: bytes) -> bool:
        """Write on the client's own connection; False once that is gone."""
        if self.live is None:
            return False
        try:
            await self.live.send(chunk)
        except (ConnectionError, RuntimeError):
            self.live = None
            return False
        return True

    def detach(self) -> None:
        """The client went away: from now on events go through the hub."""
        self.live = None


class ResumedResponse(ClientStream):
    """A POST's response stream resumed with GET + `Last-Event-ID`, on any worker: the events
    the client missed (from the event log), then the rest of the call as it happens (from
    the hub), each once and in order, up to the answer. If no answer has come by the call's
    deadline, its worker stopped: the client gets an error answer instead."""

    session_id: str

    def __init__(
        self,
        stream: sse.EventStream,
        session_id: str,
        epoch: str,
        last: int,
        events: EventLog,
        record: ResponseRecord,
    ) -> None:
        self.stream = stream
        self.session_id = session_id
        self.epoch = epoch
        self.count = last
        self.events = events
        self.record = record
        self.closed = asyncio.Event()
        """Set once the answer is sent, the client left or the session ended."""
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        async with self._lock:
            await self._send(sse.priming(f"{self.epoch}-{self.count}"))
            await self._catch_up()
        while not self.closed.is_set():
            left = self.record.deadline + DEADLINE_SLACK - time.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(CATCH_UP_SECONDS, left)):
                    await self.closed.wait()
            async with self._lock:
                await self._catch_up()
        if not self.closed.is_set():
            lost = jsonrpc.RPCError(
                jsonrpc.INTERNAL_ERROR,
                "Internal error: the call ended without an answer (the worker running it stopped)",
            )
            await self._send(sse.event(jsonrpc.error(self.record.request_id, lost), name="message"))

    async def call_event(self, number: int, message: JSON | None) -> None:
        async with self._lock:
            if message is None or number > self.count + 1:
                await self._catch_up()  # from the log: a large event, or one the hub lost
            if message is not None and number > self.count and not self.closed.is_set():
                await self._event(number, orjson.dumps(message))

    async def _catch_up(self) -> None:
        if self.closed.is_set():
            return
        for number, data in await self.events.after(self.session_id, self.epoch, self.count):
            await self._event(number, data)
            if self.closed.is_set():
                return

    async def _event(self, number: int, data: bytes) -> None:
        await self._send(sse.event(data, name="message", event_id=f"{self.epoch}-{number}"))
        self.count = number
        if "method" not in orjson.loads(data):
            self.closed.set()  # the answer: the response stream is complete

    async def _send(self, chunk: bytes) -> None:
        if self.closed.is_set():
            return
        try:
            await self.stream.send(chunk)
        except (ConnectionError, RuntimeError):
            self.closed.set()

    async def close(self) -> None:
        self.closed.set()
        await self.stream.close()


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
