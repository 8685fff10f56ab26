"""MCP client sessions, kept in the cache so any worker or instance sharing it serves any
session.

A session is a small JSON record under `session:<id>`, with an idle TTL (`SESSION_TTL`)
renewed as it is used. Nothing about a session lives only in one worker's memory: a
request for a session id can land anywhere. Open SSE streams are the exception by nature
(a TCP connection lives in one process); messages for them travel over the cache's
pub/sub channel `session:<id>`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from gateway.cacheuse import CacheUse


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    protocol_version: str
    subject: str
    """The JWT subject that opened it; other callers cannot use it."""
    server: str | None = None
    """The virtual server it belongs to, or None for the whole gateway."""
    client_info: dict[str, Any] = field(default_factory=dict)
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    initialized: bool = False
    log_level: str | None = None
    subscriptions: tuple[str, ...] = ()
    created_at: float = 0.0
    last_seen: float = 0.0

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionRecord:
        data = orjson.loads(raw)
        data["subscriptions"] = tuple(data.get("subscriptions", ()))
        return cls(**data)


def new_session_id() -> str:
    # Visible ASCII only, as MCP requires of Mcp-Session-Id; 256 bits of randomness.
    return secrets.token_urlsafe(32)


class SessionStore:
    def __init__(self, use: CacheUse, ttl: float) -> None:
        self.use = use
        self.ttl = ttl

    @staticmethod
    def key(session_id: str) -> str:
        return f"session:{session_id}"

    async def create(self, **fields: Any) -> SessionRecord:
        now = time.time()
        record = SessionRecord(id=new_session_id(), created_at=now, last_seen=now, **fields)
        await self.save(record)
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self.use.run(self.use.cache.get(self.key(session_id)))
        return None if raw is None else SessionRecord.from_bytes(raw)

    async def save(self, record: SessionRecord) -> None:
        await self.use.run(self.use.cache.set(self.key(record.id), record.to_bytes(), self.ttl))

    async def update(self, record: SessionRecord, **changes: Any) -> SessionRecord:
        updated = replace(record, last_seen=time.time(), **changes)
        await self.save(updated)
        return updated

    async def touch(self, record: SessionRecord) -> SessionRecord:
        updated = replace(record, last_seen=time.time())
        await self.save(updated)
        return updated

    async def delete(self, session_id: str) -> None:
        await self.use.run(self.use.cache.delete(self.key(session_id)))
