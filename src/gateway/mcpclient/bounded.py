"""Bounds on what an upstream may send: a reply's bytes, counted after decompression
(`MAX_UPSTREAM_RESPONSE_BYTES`), and a line of an event stream (`MAX_SSE_LINE_BYTES`).

A reply is read chunk by chunk and given up as soon as it passes its bound, so a body that
never ends, or a small gzip body that inflates to a gigabyte, costs at most the bound in
memory; the caller then closes the connection, since the rest of the reply is still on it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.settings import Settings

ERROR_BODY_BYTES = 65_536
"""What is read of an HTTP error's body, only to find a JSON-RPC error message in it."""


class TooLarge(Exception):
    """An upstream sent more than a bound allows; the message names the setting."""

    def __init__(self, what: str, setting: str, limit: int) -> None:
        super().__init__(f"{what} larger than {setting} ({limit} bytes)")
        self.setting = setting


@dataclass(frozen=True, slots=True)
class Bounds:
    response_bytes: int
    sse_line_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(settings.max_upstream_response_bytes, settings.max_sse_line_bytes)

    def reply_too_large(self) -> TooLarge:
        return TooLarge("a reply", "MAX_UPSTREAM_RESPONSE_BYTES", self.response_bytes)

    def event_too_large(self) -> TooLarge:
        return TooLarge("an event", "MAX_UPSTREAM_RESPONSE_BYTES", self.response_bytes)

    def line_too_long(self) -> TooLarge:
        return TooLarge("an event-stream line", "MAX_SSE_LINE_BYTES", self.sse_line_bytes)


UNBOUNDED = Bounds(2**62, 2**62)


class Readable(Protocol):
    """A body as both HTTP clients give it: aiohttp's `StreamReader`, `body.Body`."""

    async def readany(self) -> bytes: ...


async def read_bounded(content: Readable, limit: int, too_large: TooLarge) -> bytes:
    """The whole body, or `too_large` once it passes `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while data := await content.readany():
        size += len(data)
        if size > limit:
            raise too_large
        parts.append(data)
    return b"".join(parts)


class Counter:
    """Counts a reply's bytes as they are read, raising once they pass the bound."""

    __slots__ = ("_bounds", "size")

    def __init__(self, bounds: Bounds) -> None:
        self._bounds = bounds
        self.size = 0

    def add(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self._bounds.response_bytes:
            raise self._bounds.reply_too_large()
        return data


class UnsupportedEncoding(ValueError):
    pass


MAX_MEMBERS = 1024
"""Gzip members one body may hold (as aiohttp allows); each costs a new decompressor."""


class Inflater:
    """A `Content-Encoding` of gzip or deflate undone a piece at a time, never producing more
    than the caller has room for (zlib's `max_length`), so a bomb stops at the bound. A
    gzip body may be several members one after another; each is inflated in turn."""

    __slots__ = ("_members", "_zlib")

    def __init__(self, encoding: str) -> None:
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise UnsupportedEncoding(encoding)
        # 32 + 15: a gzip or zlib header, told apart by zlib itself.
        self._zlib = zlib.decompressobj(47)
        self._members = 1

    def inflate(self, data: bytes, room: int) -> bytes:
        """Up to `room` + 1 bytes of output (one past it shows the bound was passed)."""
        if self._zlib.eof:
            data = self._next_member() + data
        out = self._zlib.decompress(data, max(room, 0) + 1)
        while self._zlib.eof and self._zlib.unused_data and len(out) <= room:
            rest = self._next_member()
            out += self._zlib.decompress(rest, room - len(out) + 1)
        return out

    def _next_member(self) -> bytes:
        rest = self._zlib.unused_data
        self._members += 1
        if self._members > MAX_MEMBERS:
            raise zlib.error(f"more than {MAX_MEMBERS} gzip members")
        self._zlib = zlib.decompressobj(47)
        return rest

    def flush(self) -> bytes:
        return self._zlib.flush()
