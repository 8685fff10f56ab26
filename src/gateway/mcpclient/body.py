"""A response body as it arrives from the lean HTTP client (`fasthttp`): read all at once,
or chunk by chunk for an event stream, with the connection paused while too much of it
waits unread. Its methods are those of aiohttp's `StreamReader` that the backends use.

A body is bounded (`MAX_UPSTREAM_RESPONSE_BYTES`, counted after any decompression): past
its bound it fails with `TooLarge` and the connection is closed at once, so nothing more
of it is read."""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.mcpclient.bounded import UNBOUNDED, Bounds

# Unread body bytes above which the connection stops reading, and below which it resumes.
HIGH_WATER = 256 * 1024


class Source(Protocol):
    """The connection a body arrives on."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


class Body:
    """A response's body as it arrives."""

    __slots__ = (
        "_bounds",
        "_chunks",
        "_connection",
        "_error",
        "_received",
        "_size",
        "_waiter",
        "complete",
    )

    def __init__(self, connection: Source, bounds: Bounds = UNBOUNDED) -> None:
        self._connection = connection
        self._bounds = bounds
        self._received = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False

    @property
    def room(self) -> int:
        """Bytes the body may still grow by."""
        return self._bounds.response_bytes - self._received

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._received += len(data)
        if self._received > self._bounds.response_bytes:
            self.set_exception(self._bounds.reply_too_large())
            self._connection.close()
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._connection.pause()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        """Fail the reads to come (and the one waiting) with `exc`."""
        if self._error is None:
            self._error = exc
        self._wake()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def at_eof(self) -> bool:
        return self.complete and not self._chunks

    async def readany(self) -> bytes:
        """What has arrived since the last read, waiting for something; b"" at the end."""
        while not self._chunks or self._error is not None:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self._wait()
        return self._take()

    async def read(self) -> bytes:
        """The whole body."""
        if self.complete and self._error is None:
            return self._take()
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    def iter_any(self) -> _Chunks:
        return _Chunks(self)

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        self._connection.resume()
        return data

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Chunks:
    """`async for chunk in body.iter_any()`: an iterator, not a generator, so a reader
    that stops early leaves nothing to finalise."""

    __slots__ = ("_body",)

    def __init__(self, body: Body) -> None:
        self._body = body

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        data = await self._body.readany()
        if not data:
            raise StopAsyncIteration
        return data
