"""An upstream that sends more than any client should read: a JSON reply that never ends, a
gzip bomb that never ends (every 4 KiB on the wire inflates to 4 MiB, so 1 MB is 1 GiB),
an event-stream line that never ends.

One aiohttp app serves it on three transports: Streamable HTTP at `/mcp`, the legacy
HTTP+SSE transport at `/sse` (messages POSTed to `/messages`), and 2026-07-28 stateless
HTTP at `/modern`. Each offers the tools `ok` (a small, well-formed answer), `huge`, `bomb`
and `long_line`, and the resource `unruly://huge`, whose read never ends either. At
`/mcp-huge-list` the Streamable HTTP server answers `tools/list` with a reply that never
ends, so discovery meets it. A GET of `/mcp` (the session's listening stream) is an event
stream whose one line never ends. `sent` counts the bytes each misbehaving answer got onto the
wire before its client hung up, so a test can tell that the client stopped early.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import zlib
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

JSON = dict[str, Any]
CHUNK = 65_536
TOOLS = ["ok", "huge", "bomb", "long_line"]


@functools.cache
def gzip_bomb() -> tuple[bytes, bytes]:
    """The start of a gzip stream of a JSON reply whose text is zeros, and a block to repeat
    after it, each 4 MiB of zeros inflated. After a full flush the compressor starts afresh,
    so every later block compresses to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(4 * 1024 * 1024)
    head = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"'
    first = compressor.compress(head + zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    compressor.compress(zeros)
    compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first, block


def reply(message_id: Any, result: JSON) -> JSON:
    return {"jsonrpc": "2.0", "id": message_id, "result": result}


def answer(message: JSON, version: str) -> JSON | None:
    """The well-formed answer to `message`, or None for a notification."""
    if "id" not in message:
        return None
    method = message.get("method")
    if method == "initialize":
        capabilities = {"tools": {}, "resources": {}}
        result: JSON = {"protocolVersion": version, "capabilities": capabilities}
        result["serverInfo"] = {"name": "unruly", "version": "1"}
    elif method == "server/discover":
        result = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}}
    elif method == "resources/list":
        result = {"resources": [{"uri": "unruly://huge", "name": "huge"}]}
    elif method == "resources/templates/list":
        result = {"resourceTemplates": []}
    elif method == "tools/list":
        schema = {"type": "object"}
        result = {"tools": [{"name": name, "inputSchema": schema} for name in TOOLS]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "fine"}], "isError": False}
    else:
        result = {}
    return reply(message["id"], result)


def misbehaviour(message: JSON) -> str | None:
    """Which misbehaving answer `message` asks for, if any."""
    if message.get("method") == "tools/call":
        name = (message.get("params") or {}).get("name")
        return name if name in ("huge", "bomb", "long_line") else None
    if message.get("method") == "resources/read":
        return "huge"
    return None


class Unruly:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        """Bytes written of each misbehaving answer, until its client went away."""
        self.finished: Counter[str] = Counter()
        """Misbehaving answers whose writer has stopped (the client hung up)."""
        self._streams: dict[str, asyncio.Queue[JSON | str]] = {}
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/mcp", self.streamable)
        app.router.add_post("/mcp-huge-list", self.streamable)
        app.router.add_get("/mcp", self.listening)
        app.router.add_post("/modern", self.modern)
        app.router.add_get("/sse", self.legacy_stream)
        app.router.add_post("/messages", self.legacy_message)
        return app

    # --- the misbehaving answers -----------------------------------------------------------

    async def _endless(self, request: web.Request, kind: str, sse: bool) -> web.StreamResponse:
        content_type = "text/event-stream" if sse else "application/json"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        if kind == "bomb":
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        await self._pour(response, kind)
        return response

    async def _pour(self, response: web.StreamResponse, kind: str) -> None:
        """Write the misbehaving answer `kind` until the client hangs up."""
        if kind == "bomb":
            first, block = gzip_bomb()
            pieces: Any = itertools.chain([first], itertools.repeat(block))
        elif kind == "long_line":
            pieces = itertools.chain([b"event: message\ndata: "], itertools.repeat(b"x" * CHUNK))
        else:
            start = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"'
            pieces = itertools.chain([start], itertools.repeat(b"x" * CHUNK))
        try:
            for piece in pieces:
                await response.write(piece)
                self.sent[kind] += len(piece)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.finished[kind] += 1

    # --- Streamable HTTP and 2026 ----------------------------------------------------------

    async def streamable(self, request: web.Request) -> web.StreamResponse:
        message = await request.json(loads=orjson.loads)
        kind = misbehaviour(message)
        if request.path == "/mcp-huge-list" and message.get("method") == "tools/list":
            kind = "huge"
        if kind is not None:
            return await self._endless(request, kind, sse=kind == "long_line")
        answered = answer(message, "2025-06-18")
        if answered is None:
            return web.Response(status=202)
        return web.json_response(answered, headers={"Mcp-Session-Id": "unruly"})

    async def listening(self, request: web.Request) -> web.StreamResponse:
        return await self._endless(request, "long_line", sse=True)

    async def modern(self, request: web.Request) -> web.StreamResponse:
        message = await request.json(loads=orjson.loads)
        kind = misbehaviour(message)
        if kind is not None:
            return await self._endless(request, kind, sse=kind == "long_line")
        return web.json_response(answer(message, "2026-07-28"))

    # --- legacy HTTP+SSE -------------------------------------------------------------------

    async def legacy_stream(self, request: web.Request) -> web.StreamResponse:
        stream_id = str(next(self._ids))
        queue: asyncio.Queue[JSON | str] = asyncio.Queue()
        self._streams[stream_id] = queue
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(f"event: endpoint\ndata: /messages?s={stream_id}\n\n".encode())
            while True:
                item = await queue.get()
                if isinstance(item, str):
                    await self._pour(response, item)
                    return response
                data = orjson.dumps(item)
                await response.write(b"event: message\ndata: " + data + b"\n\n")
        except (ConnectionError, RuntimeError):
            return response
        finally:
            del self._streams[stream_id]

    async def legacy_message(self, request: web.Request) -> web.Response:
        queue = self._streams.get(request.query.get("s", ""))
        if queue is None:
            return web.Response(status=404)
        message = await request.json(loads=orjson.loads)
        kind = misbehaviour(message)
        answered = answer(message, "2024-11-05")
        if kind is not None:
            queue.put_nowait("long_line")
        elif answered is not None:
            queue.put_nowait(answered)
        return web.Response(status=202)
