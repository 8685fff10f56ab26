"""Server-sent events: writing them to an aiohttp response."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 1000
"""How long a client waits before it reconnects to a stream it lost (the `retry` field)."""


def event(
    data: bytes,
    *,
    name: str | None = None,
    event_id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One SSE event; `data` must be a single line (JSON from orjson is)."""
    parts = []
    if event_id is not None:
        parts.append(b"id: " + event_id.encode())
    if name is not None:
        parts.append(b"event: " + name.encode())
    if retry_ms is not None:
        parts.append(b"retry: %d" % retry_ms)
    parts.append(b"data: " + data)
    return b"\n".join(parts) + b"\n\n"


def priming(event_id: str) -> bytes:
    """The event a 2025-11-25 stream starts with: an id to resume from and the reconnection
    delay, with empty data, which clients record but do not dispatch."""
    return event(b"", event_id=event_id, retry_ms=RETRY_MS)


def message_event(
    message: dict[str, Any], event_id: str | None = None, name: str | None = "message"
) -> bytes:
    return event(orjson.dumps(message), name=name, event_id=event_id)


class EventStream:
    """An open `text/event-stream` response with keep-alive comments."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self._lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, request: web.Request, headers: dict[str, str] | None = None, keepalive: bool = True
    ) -> EventStream:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                "X-Accel-Buffering": "no",
                **(headers or {}),
            },
        )
        await response.prepare(request)
        stream = cls(response)
        if keepalive:
            stream._keepalive = asyncio.create_task(stream._ping())
        return stream

    async def send(self, chunk: bytes) -> None:
        async with self._lock:
            await self.response.write(chunk)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            try:
                await self.send(b": keep-alive\n\n")
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        try:
            await self.response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
