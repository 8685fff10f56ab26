"""MCP client sessions, kept in the cache so any worker or instance sharing it serves any
session.

A session is a small JSON record under `session:<id>`, with an idle TTL (`SESSION_TTL`)
renewed as it is used. Nothing about a session lives only in one worker's memory: a
request for a session id can land anywhere. Open SSE streams are the exception by nature
(a TCP connection lives in one process); messages for them travel over the cache's
pub/sub channel `session:<id>`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import orjson

from gateway import jsonrpc
from gateway.cacheuse import CacheUnavailable, CacheUse
from gateway.jsonrpc import RPCError
from gateway.metrics import CLIENT_SESSIONS_CREATED


class TooManySessions(RPCError):
    """The caller holds `MAX_SESSIONS_PER_SUBJECT` live sessions already."""

    status = 429

    def __init__(self, limit: int) -> None:
        super().__init__(
            jsonrpc.RATE_LIMITED,
            f"Too many sessions: this caller holds MAX_SESSIONS_PER_SUBJECT ({limit}) already; "
            "end one (DELETE it, or close its stream) or let one expire",
        )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    protocol_version: str
    subject: str
    """The JWT subject that opened it; other callers cannot use it."""
    server: str | None = None
    """The virtual server it belongs to, or None for the whole gateway."""
    transport: str = "streamable-http"
    """`streamable-http` or `sse`: a session id is valid only on the transport that made it."""
    client_info: dict[str, Any] = field(default_factory=dict)
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    log_level: str | None = None
    subscriptions: tuple[str, ...] = ()
    created_at: float = 0.0
    last_seen: float = 0.0
    owner: str = ""
    """Whom `MAX_SESSIONS_PER_SUBJECT` counts it against: the token subject, or the address
    of an anonymous caller; empty: nobody."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionRecord:
        data = orjson.loads(raw)
        data["subscriptions"] = tuple(data.get("subscriptions", ()))
        # Fields a newer or older gateway wrote that this one does not know are left out.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_session_id() -> str:
    # Visible ASCII only, as MCP requires of Mcp-Session-Id; 256 bits of randomness.
    return secrets.token_urlsafe(32)


class SessionStore:
    """Sessions in the cache, with a short-lived copy in each worker.

    The local copy keeps the session lookup of every `/mcp` request off the cache (and off
    the database, with `CACHE_TYPE=database`). It lives `LOCAL_TTL` seconds; an ended
    session is dropped from every worker before the request that ended it returns (the
    hub's `session-closed` event, confirmed by every worker, see `gateway.consistency`),
    so only changes such as a new log level may take that long to reach other workers.
    """

    LOCAL_TTL = 2.0
    LOCAL_MAX = 20_000
    ENDED_KEEP = 60.0
    """Seconds a worker remembers that a session ended, so that a request already running
    then cannot bring it back, into this worker's copy or into the cache."""

    def __init__(self, use: CacheUse, ttl: float, per_subject_max: int = 0) -> None:
        self.use = use
        self.ttl = ttl
        self.per_subject_max = per_subject_max
        """Live sessions one subject may hold; 0: no bound."""
        self._local: dict[str, tuple[float, SessionRecord]] = {}
        self._loading: dict[str, asyncio.Future[SessionRecord | None]] = {}
        self._ended: dict[str, float] = {}
        """Session ids that ended, until when (monotonic) this worker remembers it."""

    @staticmethod
    def key(session_id: str) -> str:
        return f"session:{session_id}"

    @staticmethod
    def owner_key(owner: str) -> str:
        return f"sessions-of:{owner}"

    async def create(self, **fields: Any) -> SessionRecord:
        """A new session; `TooManySessions` when its subject holds the most it may."""
        now = time.time()
        record = SessionRecord(id=new_session_id(), created_at=now, last_seen=now, **fields)
        if self.per_subject_max and record.owner:
            await self._count_in(record)
        await self.save(record)
        CLIENT_SESSIONS_CREATED.inc()
        return record

    async def _held(self, owner: str) -> dict[str, float]:
        """The owner's sessions that may still live, each with when it expires at the
        latest (wall clock), from the owner's index in the cache."""
        raw = await self.use.run(self.use.cache.get(self.owner_key(owner)))
        held: dict[str, float] = orjson.loads(raw) if raw is not None else {}
        now = time.time()
        return {sid: until for sid, until in held.items() if until > now}

    async def _count_in(self, record: SessionRecord) -> None:
        """Add the session to its subject's index, or refuse it. Workers creating sessions
        for one subject at the same instant may each pass: the bound can be passed by
        those few, never by more."""
        held = await self._held(record.owner)
        if len(held) >= self.per_subject_max:
            raise TooManySessions(self.per_subject_max)
        await self._write_index(record.owner, {**held, record.id: record.last_seen + self.ttl})

    async def _write_index(self, owner: str, held: dict[str, float]) -> None:
        key = self.owner_key(owner)
        if held:
            await self.use.run(self.use.cache.set(key, orjson.dumps(held), self.ttl))
        else:
            await self.use.run(self.use.cache.delete(key))

    async def get(self, session_id: str) -> SessionRecord | None:
        now = time.monotonic()
        if self._has_ended(session_id, now):
            return None
        held = self._local.get(session_id)
        if held is not None and time.time() - held[1].last_seen > self.ttl:
            self._local.pop(session_id, None)
            held = None
        if held is not None and held[0] > now:
            return held[1]
        # One cache read per session at a time: when a busy session's copy expires, the
        # requests in flight share one read instead of stampeding the cache.
        loading = self._loading.get(session_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(session_id))
            self._loading[session_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(session_id, None))
        try:
            return await asyncio.shield(loading)
        except CacheUnavailable:
            if held is not None:
                return held[1]  # a slow or absent cache does not end a live session
            raise

    async def find(
        self, session_id: str, subject: str, server: str | None, transport: str
    ) -> SessionRecord | None:
        """The session, renewed, if it exists and belongs to this caller, endpoint and
        transport; None otherwise. Raises `CacheUnavailable` when it cannot be read."""
        session = await self.get(session_id)
        if session is None or (session.subject, session.server, session.transport) != (
            subject,
            server,
            transport,
        ):
            return None
        try:
            return await self.touch(session)
        except CacheUnavailable:
            return session

    async def get_stored(self, session_id: str) -> SessionRecord | None:
        """The session as the cache holds it now, skipping this worker's copy: for a
        transport whose handshake is answered in the background, on any worker."""
        if self._has_ended(session_id, time.monotonic()):
            return None
        return await self._load(session_id)

    async def _load(self, session_id: str) -> SessionRecord | None:
        raw = await self.use.run(self.use.cache.get(self.key(session_id)))
        if raw is None:
            self._local.pop(session_id, None)
            return None
        record = SessionRecord.from_bytes(raw)
        self._remember(record, time.monotonic())
        return record

    def _remember(self, record: SessionRecord, now: float) -> None:
        if self._has_ended(record.id, now):
            return
        if len(self._local) >= self.LOCAL_MAX:
            self._local = {k: v for k, v in self._local.items() if v[0] > now}
            if len(self._local) >= self.LOCAL_MAX:
                self._local.clear()
        self._local[record.id] = (now + min(self.LOCAL_TTL, self.ttl), record)

    def drop_copy(self, session_id: str) -> None:
        """The session changed elsewhere: read it from the cache next time."""
        self._local.pop(session_id, None)

    def forget(self, session_id: str) -> None:
        """The session ended: drop this worker's copy and refuse it from now on."""
        self._local.pop(session_id, None)
        now = time.monotonic()
        if len(self._ended) >= self.LOCAL_MAX:
            self._ended = {k: until for k, until in self._ended.items() if until > now}
            if len(self._ended) >= self.LOCAL_MAX:
                self._ended.clear()
        self._ended[session_id] = now + self.ENDED_KEEP

    def _has_ended(self, session_id: str, now: float) -> bool:
        until = self._ended.get(session_id)
        if until is None:
            return False
        if until > now:
            return True
        del self._ended[session_id]
        return False

    async def save(self, record: SessionRecord) -> None:
        if self._has_ended(record.id, time.monotonic()):
            return  # written back, it would outlive its end
        await self.use.run(self.use.cache.set(self.key(record.id), record.to_bytes(), self.ttl))
        self._remember(record, time.monotonic())

    async def update(self, record: SessionRecord, **changes: Any) -> SessionRecord:
        """Change fields of a session as stored now, not as `record` (which may be this
        worker's older copy) has it: another worker may have changed other fields since."""
        stored = await self.use.run(self.use.cache.get(self.key(record.id)))
        current = SessionRecord.from_bytes(stored) if stored is not None else record
        updated = replace(current, last_seen=time.time(), **changes)
        await self.save(updated)
        return updated

    async def touch(self, record: SessionRecord) -> SessionRecord:
        """Renew the idle TTL of a session in use; at most once per tenth of the TTL."""
        if time.time() - record.last_seen < self.ttl / 10:
            return record
        updated = await self.update(record)
        if self.per_subject_max and record.owner:
            held = await self._held(record.owner)
            held[record.id] = updated.last_seen + self.ttl
            await self._write_index(record.owner, held)
        return updated

    async def delete(self, session_id: str) -> None:
        record = await self.get(session_id) if self.per_subject_max else None
        self.forget(session_id)
        await self.use.run(self.use.cache.delete(self.key(session_id)))
        if record is not None and record.owner:
            held = await self._held(record.owner)
            if held.pop(session_id, None) is not None:
                await self._write_index(record.owner, held)
