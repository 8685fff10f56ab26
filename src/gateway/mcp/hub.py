"""Where server-to-client messages meet the streams that carry them, across workers.

A client's stream (a GET stream, a legacy SSE stream, a `subscriptions/listen` stream) is a
TCP connection held by one worker; the request that produces a message for it may land on
any worker. So every message for a session travels over one cache channel, `mcp-events`,
and the worker holding the stream writes it. The same channel carries cancellations (to
the worker running the request), resource updates (to every worker's subscribers), and
the events of calls whose client went away (to the worker holding the stream that resumed
the call's response with `Last-Event-ID`).
Catalogue changes need no channel: every worker reloads and notifies its own streams.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import structlog

from gateway.catalogue import Catalogue, changed_kinds
from gateway.consistency import Consistency
from gateway.contracts import Cache
from gateway.logconfig import short_hash
from gateway.mcp.running import Running
from gateway.sessions import SessionStore

log = structlog.get_logger(__name__)

JSON = dict[str, Any]
CHANNEL = "mcp-events"
INLINE_MAX = 2048
"""Bytes of an event sent on the channel itself; bigger ones are parked in the cache."""
PARKED_TTL = 60.0

LIST_CHANGED = {
    "tools": "notifications/tools/list_changed",
    "resources": "notifications/resources/list_changed",
    "prompts": "notifications/prompts/list_changed",
}


class ClientStream:
    """One open stream to a client; subclasses decide what they carry and how."""

    session_id: str | None = None
    server: str | None = None
    """The virtual server the stream belongs to, or None for the whole gateway."""

    async def deliver(self, message: JSON) -> None:
        """A message addressed to this stream's session (responses, progress, logs)."""

    async def list_changed(self, kind: str) -> None:
        """The catalogue changed for `kind` (tools, resources or prompts)."""

    async def resource_updated(self, uri: str) -> None:
        """An upstream resource changed; send it if this stream's client subscribed."""

    async def call_event(self, number: int, message: JSON | None) -> None:
        """Event `number` of the call whose response this stream resumed; None: read it from
        the event log."""

    async def close(self) -> None: ...


class Hub:
    def __init__(self, cache: Cache, sessions: SessionStore, consistency: Consistency) -> None:
        self.cache = cache
        self.sessions = sessions
        self.consistency = consistency
        self.streams: dict[str, set[ClientStream]] = {}
        """Streams by session id; listen streams (no session) live under their own key."""
        self.inflight: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.running = Running(cache)
        """The requests running here long enough for other workers to cancel them."""
        self.session_listeners: list[Callable[[str], Awaitable[None]]] = []
        """Called on every worker with the id of each session that ends."""
        self.asks: dict[str, tuple[str, asyncio.Future[JSON]]] = {}
        """Requests relayed to clients, by the id the gateway gave them: (owner, answer); the
        owner is the session asked, or for a sessionless 2026 call the caller's key."""
        self.handlers: dict[str, Callable[[JSON], Awaitable[None]]] = {}
        """Event kinds other parts define (the era bridge's), by kind."""
        self.followers: dict[tuple[str, str], set[ClientStream]] = {}
        """Streams resuming a call's response, by (session, the response stream's epoch)."""
        self.detached: set[asyncio.Task[Any]] = set()
        """Calls running on after their client went away, each until it answers."""
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        tasks = [*self._background, *self.detached, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.running.close()
        await self.close_streams()

    async def close_streams(self) -> None:
        """End every open client stream, so shutdown need not wait for clients to leave."""
        for streams in [*self.streams.values(), *self.followers.values()]:
            for stream in list(streams):
                await _quietly(stream.close())

    # --- streams -------------------------------------------------------------------------

    def attach(self, key: str, stream: ClientStream) -> None:
        self.streams.setdefault(key, set()).add(stream)

    def detach(self, key: str, stream: ClientStream) -> None:
        streams = self.streams.get(key)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self.streams[key]

    def stream_count(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def follow(self, session_id: str, epoch: str, stream: ClientStream) -> None:
        self.followers.setdefault((session_id, epoch), set()).add(stream)

    def unfollow(self, session_id: str, epoch: str, stream: ClientStream) -> None:
        followers = self.followers.get((session_id, epoch))
        if followers is not None:
            followers.discard(stream)
            if not followers:
                del self.followers[(session_id, epoch)]

    async def send_to_follower(
        self, session_id: str, epoch: str, number: int, message: JSON, *, inline: bool = True
    ) -> None:
        """Event `number` of a call's response stream whose client went away: to the stream
        that resumed it, directly when this worker holds it. The event is in the event log
        already, so a stream that resumes later replays it instead, and a message that is
        not `inline` stays out of the event between workers (some caches carry only small
        events): the stream reads it from the log."""
        local = self.followers.get((session_id, epoch))
        if local:
            for stream in list(local):
                await _quietly(stream.call_event(number, message))
            return
        carried = message if inline else None
        event = {"session": session_id, "epoch": epoch, "number": number, "message": carried}
        await self.publish({"kind": "call-event", **event})

    def keep_running(self, task: asyncio.Task[Any], limit: int) -> bool:
        """Keep a call running after its client went away, unless this worker already keeps
        `limit` such calls; the task is forgotten once it ends."""
        if len(self.detached) >= limit:
            return False
        self.detached.add(task)
        task.add_done_callback(self.detached.discard)
        return True

    # --- in-flight requests ----------------------------------------------------------------

    def track(
        self, session_id: str, request_id: object, task: asyncio.Task[Any]
    ) -> Callable[[], None]:
        """Make a running request cancellable by id; call the result when it ends."""
        key = (session_id, orjson.dumps(request_id).decode())
        self.inflight[key] = task
        announcement = self.running.started(*key)

        def untrack() -> None:
            if self.inflight.get(key) is task:
                del self.inflight[key]
            announcement.ended()

        return untrack

    # --- events ------------------------------------------------------------------------------

    async def publish(self, event: JSON) -> None:
        """Send an event to every worker (this one included, through the cache). An event
        too big for every cache's channel (PostgreSQL's NOTIFY carries under 8 KB) is
        parked under a key of its own, and the channel carries the key."""
        try:
            raw = orjson.dumps(event)
            if len(raw) > INLINE_MAX:
                key = f"hub-event:{secrets.token_urlsafe(12)}"
                await self.cache.set(key, raw, PARKED_TTL)
                raw = orjson.dumps({"kind": "parked", "key": key})
            await self.cache.publish(CHANNEL, raw)
        except Exception as exc:
            # Without the cache only this worker can act on it.
            log.warning("mcp event not published; delivering locally", error=str(exc))
            await self.on_event(event)

    async def send_to_session(self, session_id: str, message: JSON) -> None:
        """Deliver to the session's stream, directly when this worker holds it."""
        local = self.streams.get(session_id)
        if local:
            for stream in list(local):
                await stream.deliver(message)
            return
        await self.publish({"kind": "deliver", "session": session_id, "message": message})

    async def session_changed(self, session_id: str) -> None:
        """A session's record changed (its subscriptions): every worker drops its copy, so
        what it routes next follows the new record; returns once they all have."""
        self.sessions.drop_copy(session_id)

        async def announce(change: str) -> None:
            await self.publish({"kind": "session-changed", "session": session_id, "change": change})

        await self.consistency.everywhere("session-changed", announce)

    async def end_session(self, session_id: str) -> None:
        """Forget a session everywhere and close its streams on every worker; return once
        every worker has forgotten it. Raises `CacheUnavailable` when the session store
        cannot be written."""
        await self.sessions.delete(session_id)

        async def announce(change: str) -> None:
            await self.publish({"kind": "session-closed", "session": session_id, "change": change})

        await self.consistency.everywhere("session-closed", announce)
        log.info("mcp session closed", session=short_hash(session_id))

    async def cancel(self, session_id: str, request_id: object) -> None:
        """Cancel the session's request `request_id` here, or on the worker running it. An id
        running nowhere (never sent, long done) costs no write and no publish."""
        key = (session_id, orjson.dumps(request_id).decode())
        task = self.inflight.get(key)
        if task is not None:
            task.cancel()
            return
        # In the background: the second look waits, and the client's notification need not.
        self._spawn(self._cancel_elsewhere(key, request_id))

    async def _cancel_elsewhere(self, key: tuple[str, str], request_id: object) -> None:
        if await self.running.elsewhere(*key):
            await self.publish({"kind": "cancel", "session": key[0], "id": request_id})

    # --- requests relayed to clients ----------------------------------------------------------

    def expect(self, session_id: str, ask_id: str) -> asyncio.Future[JSON]:
        """A future for the client's answer to the request `ask_id`, relayed to `session_id`;
        call `forget` when done waiting."""
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self.asks[ask_id] = (session_id, future)
        return future

    def forget(self, ask_id: str) -> None:
        self.asks.pop(ask_id, None)

    async def answer(self, session_id: str, ask_id: str, message: JSON) -> None:
        """Hand a client's answer to the worker waiting for it (this one, or through the
        cache). The caller has checked that `session_id` was asked `ask_id`."""
        if not self._resolve(session_id, ask_id, message):
            await self.publish(
                {"kind": "answer", "session": session_id, "id": ask_id, "message": message}
            )

    def _resolve(self, session_id: str, ask_id: str, message: JSON) -> bool:
        waiting = self.asks.get(ask_id)
        if waiting is None or waiting[0] != session_id:
            return False
        if not waiting[1].done():
            waiting[1].set_result(message)
        return True

    async def catalogue_changed(self, old: Catalogue, new: Catalogue) -> None:
        """Tell each local stream what changed in the view it serves, in the background:
        the write that caused the change should not wait for every stream."""
        if old.version >= 0:
            self._spawn(self._fan_out(old, new))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fan_out(self, old: Catalogue, new: Catalogue) -> None:
        changes: dict[str | None, list[str]] = {}
        sent = 0
        for streams in list(self.streams.values()):
            for stream in list(streams):
                if stream.server not in changes:
                    changes[stream.server] = changed_kinds(
                        old.view(stream.server), new.view(stream.server)
                    )
                for kind in changes[stream.server]:
                    await _quietly(stream.list_changed(kind))
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)  # thousands of streams must not freeze the worker

    async def on_event(self, event: JSON) -> None:
        kind = event.get("kind")
        if kind == "deliver":
            for stream in list(self.streams.get(str(event.get("session")), ())):
                await _quietly(stream.deliver(event["message"]))
        elif kind == "cancel":
            key = (str(event.get("session")), orjson.dumps(event.get("id")).decode())
            task = self.inflight.get(key)
            if task is not None:
                task.cancel()
        elif kind == "answer":
            self._resolve(str(event.get("session")), str(event.get("id")), event["message"])
        elif kind == "call-event":
            key = (str(event.get("session")), str(event.get("epoch")))
            for stream in list(self.followers.get(key, ())):
                await _quietly(stream.call_event(int(event["number"]), event.get("message")))
        elif kind == "resource-updated":
            uri = str(event.get("uri"))
            for streams in list(self.streams.values()):
                for stream in list(streams):
                    await _quietly(stream.resource_updated(uri))
        elif kind == "session-changed":
            self.sessions.drop_copy(str(event.get("session")))
            await self.consistency.applied(event.get("change"))
        elif kind == "session-closed":
            session_id = str(event.get("session"))
            self.sessions.forget(session_id)
            for stream in list(self.streams.get(session_id, ())):
                await stream.close()
            for (followed, _), streams in list(self.followers.items()):
                if followed == session_id:
                    for stream in list(streams):
                        await stream.close()
            for listener in self.session_listeners:
                await listener(session_id)
            await self.consistency.applied(event.get("change"))
        elif isinstance(kind, str) and kind in self.handlers:
            await self.handlers[kind](event)

    async def _unparked(self, event: JSON) -> JSON:
        if event.get("kind") != "parked":
            return event
        raw = await self.cache.get(str(event.get("key")))
        if raw is None:
            raise LookupError(f"parked event {event.get('key')} has expired")
        parked: JSON = orjson.loads(raw)
        return parked

    async def _listen(self) -> None:
        while True:
            try:
                async for raw in self.cache.subscribe(CHANNEL):
                    try:
                        await self.on_event(await self._unparked(orjson.loads(raw)))
                    except Exception as exc:
                        log.warning("mcp event not handled", error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("mcp event subscription lost; retrying", error=str(exc))
            await asyncio.sleep(1.0)


async def _quietly(operation: Awaitable[None]) -> None:
    """A stream whose client went away must not stop delivery to the others."""
    try:
        await operation
    except (ConnectionError, RuntimeError) as exc:
        log.debug("stream write failed", error=str(exc))
