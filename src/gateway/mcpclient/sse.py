"""Incremental `text/event-stream` parsing for the client transports.

The parser is our own. The libraries on PyPI were weighed and none fits better: httpx-sse
(and its copy inside httpx2) reads httpx responses only, decodes to `str` and dispatches
events that carry no data; sseclient-py pulls from a blocking iterator, so aiohttp's
stream cannot feed it; aiohttp-sse-client and its fork make their own GET and reconnect,
which neither a POST's reply stream nor our resumption with backoff can use, and have seen
no release for years; assel has the right sans-I/O shape but shares one UTF-8 decoder
between all its parsers and splits its whole buffer again for every chunk, which is
quadratic on the multi-megabyte replies a tool can send. This one takes aiohttp's chunks
as bytes, scans each byte once, and hands orjson the data as bytes. It is bounded: a line
longer than `MAX_SSE_LINE_BYTES`, ended or not, and an event whose data passes
`MAX_UPSTREAM_RESPONSE_BYTES`, raise `TooLarge` without more being kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.mcpclient.bounded import UNBOUNDED, Bounds


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: bytes


_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SseParser:
    """Incremental `text/event-stream` parser (WHATWG rules): any of CR, LF or CRLF ends a
    line, `data` fields join with LF, comments and unknown fields are skipped, and an event
    with no data is not dispatched. Data stays bytes because orjson reads bytes. The last
    event id and the server's `retry` (milliseconds) are kept for a reconnect."""

    def __init__(self, bounds: Bounds = UNBOUNDED) -> None:
        self._bounds = bounds
        self._data_size = 0
        self._buf = bytearray()
        self._scanned = 0
        self._data: list[bytes] = []
        self._event = ""
        self._started = False
        self._skip_lf = False
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        if self._skip_lf:
            # The previous chunk ended in CR; an LF here completes that CRLF, not a new line.
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buf = self._buf
        buf += chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(bytes(buf)):
                return []
            self._started = True
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
        events: list[SseEvent] = []
        start = 0
        # Resume the search where the last chunk left off, so a long line arriving in many
        # chunks is scanned once rather than once per chunk.
        pos = self._scanned
        longest = self._bounds.sse_line_bytes
        while (match := _EOL.search(buf, pos)) is not None:
            if match.start() - start > longest:
                raise self._bounds.line_too_long()
            event = self._line(bytes(buf[start : match.start()]))
            if event is not None:
                events.append(event)
            start = pos = match.end()
        # A CR at the very end is taken as a line end now, so an event is not held back
        # waiting for a byte that may never come.
        self._skip_lf = buf.endswith(b"\r")
        del buf[:start]
        if len(buf) > longest:
            raise self._bounds.line_too_long()
        self._scanned = len(buf)
        return events

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data_size += len(value) + 1
            if self._data_size > self._bounds.response_bytes:
                raise self._bounds.event_too_large()
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self.last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        self._data_size = 0
        if not data:
            return None
        return SseEvent(event or "message", b"\n".join(data))
