"""The bridge's standard streams: JSON-RPC messages one per line, read from stdin with a
bound on a line's length, and written to stdout whole, one line each, in the order sent.

Pipes (what a client that launches the bridge gives it), sockets and terminals are read
and written by the event loop; a regular file or /dev/null (a redirect, when trying the
bridge by hand) is read in a thread, because the loop cannot watch one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, Protocol

import orjson

CHUNK = 64 * 1024


class TooLong:
    """A line longer than the bound; the bridge has skipped it."""

    def __init__(self, size: int) -> None:
        self.size = size


class LineReader:
    """Lines from a byte source, without their end; one longer than `limit` bytes is
    dropped as it arrives (never held whole) and reported once as `TooLong`."""

    def __init__(self, read: Callable[[], Awaitable[bytes]], limit: int) -> None:
        self._read = read
        self._limit = limit
        self._buf = bytearray()
        self._scanned = 0
        self._skipped = 0
        """Bytes of an overlong line dropped so far (0 when not skipping one)."""

    async def next_line(self) -> bytes | TooLong | None:
        """The next line, `TooLong` for one that was dropped, None at the end of input."""
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                self._scanned = 0
                if self._skipped:
                    size, self._skipped = self._skipped + len(line), 0
                    return TooLong(size)
                if len(line) > self._limit:
                    return TooLong(len(line))
                return line.rstrip(b"\r")
            if len(self._buf) > self._limit:
                self._skipped += len(self._buf)
                self._buf.clear()
            self._scanned = len(self._buf)
            chunk = await self._read()
            if not chunk:
                return self._last()
            self._buf += chunk

    def _last(self) -> bytes | TooLong | None:
        """What is left at the end of input: a last line without its newline."""
        if self._skipped:
            size, self._skipped = self._skipped + len(self._buf), 0
            self._buf.clear()
            return TooLong(size)
        if not self._buf.strip():
            return None
        line = bytes(self._buf)
        self._buf.clear()
        return line


class Outlet(Protocol):
    """Where the bridge writes the messages its client reads."""

    async def send(self, message: Any) -> None: ...


class PipeOutlet:
    """Messages written to a pipe by the event loop, waiting while the reader lags."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def send(self, message: Any) -> None:
        self._writer.write(orjson.dumps(message) + b"\n")
        await self._writer.drain()


class FileOutlet:
    """Messages written to a regular file, which never makes a writer wait."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    async def send(self, message: Any) -> None:
        self._stream.write(orjson.dumps(message) + b"\n")
        self._stream.flush()


async def _read_file(fd: int) -> bytes:
    return await asyncio.to_thread(os.read, fd, CHUNK)


def _watchable(fd: int) -> bool:
    """Whether the event loop can wait on `fd`: a pipe, a socket or a terminal; not a
    regular file or a device such as /dev/null, which epoll refuses."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def open_stdin(limit: int) -> LineReader:
    loop = asyncio.get_running_loop()
    stream = sys.stdin.buffer
    fd = stream.fileno()
    if not _watchable(fd):
        return LineReader(lambda: _read_file(fd), limit)
    reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    return LineReader(lambda: reader.read(CHUNK), limit)


async def open_stdout() -> Outlet:
    loop = asyncio.get_running_loop()
    stream = sys.stdout.buffer
    if not _watchable(stream.fileno()):
        return FileOutlet(stream)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stream)
    return PipeOutlet(asyncio.StreamWriter(transport, protocol, None, loop))
