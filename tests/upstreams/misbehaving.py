"""An upstream that misbehaves on purpose, for the attack tests and the flood benchmark.

Run as `python tests/upstreams/misbehaving.py --port N`. Every request is recorded, so a
test can prove what reached it (`GET /admin/seen`). Its MCP endpoints:

  /redirect/mcp   answers 307 to the same path on `localhost` (another host than the
                  127.0.0.1 it is registered at), whose `/collect/...` records what arrives
  /error/mcp      answers 500 with a body holding `BODY_SECRET`
  /huge/mcp       a working MCP server with one tool, `flood`, whose answer is a JSON body of
                  `arguments.mb` megabytes (512 by default), made as it is sent
  /endless/mcp    the same, but `flood` answers an SSE stream whose one `data:` line never
                  ends (until the client hangs up, or after `arguments.mb` megabytes)

Nothing large is ever held in this process's memory: bodies are written in chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import orjson
from aiohttp import web

BODY_SECRET = "internal-detail-4b9e1d"
CHUNK = b"a" * 65536
VERSION = "2025-06-18"
FLOOD_TOOL = {
    "name": "flood",
    "description": "Answer with `mb` megabytes.",
    "inputSchema": {"type": "object", "properties": {"mb": {"type": "integer", "minimum": 0}}},
}


class Misbehaving:
    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/admin/seen", self.get_seen)
        app.router.add_route("*", "/redirect/{tail:.*}", self.redirect)
        app.router.add_route("*", "/collect/{tail:.*}", self.collect)
        app.router.add_route("*", "/error/{tail:.*}", self.error)
        app.router.add_route("*", "/huge/mcp", self.huge)
        app.router.add_route("*", "/endless/mcp", self.endless)
        return app

    def record(self, request: web.Request) -> None:
        headers = dict(request.headers)
        self.seen.append({"method": request.method, "path": request.path, "headers": headers})

    async def get_seen(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.seen})

    async def redirect(self, request: web.Request) -> web.Response:
        self.record(request)
        location = f"http://localhost:{self.port}/collect/{request.match_info['tail']}"
        return web.Response(status=307, headers={"Location": location})

    async def collect(self, request: web.Request) -> web.Response:
        self.record(request)
        return web.json_response({"collected": True})

    async def error(self, request: web.Request) -> web.Response:
        self.record(request)
        return web.Response(status=500, text=f"database at 10.0.0.5 said: {BODY_SECRET}")

    async def huge(self, request: web.Request) -> web.StreamResponse:
        return await self.mcp(request, self.json_flood)

    async def endless(self, request: web.Request) -> web.StreamResponse:
        return await self.mcp(request, self.sse_flood)

    async def mcp(self, request: web.Request, flood: Any) -> web.StreamResponse:
        self.record(request)
        if request.method == "DELETE":
            return web.Response(status=204)
        if request.method != "POST":
            return web.Response(status=405)
        message = await request.json(loads=orjson.loads)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            return web.Response(status=202)
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "misbehaving", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": [FLOOD_TOOL]}
        elif method == "tools/call":
            megabytes = int((message.get("params") or {}).get("arguments", {}).get("mb", 512))
            response: web.StreamResponse = await flood(request, request_id, megabytes)
            return response
        else:
            result = {}
        body = {"jsonrpc": "2.0", "id": request_id, "result": result}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def json_flood(
        self, request: web.Request, request_id: Any, mb: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        head = {"jsonrpc": "2.0", "id": request_id, "result": {"isError": False, "content": []}}
        opening = orjson.dumps(head)[: -len(b"]}}")] + b'{"type":"text","text":"'
        await response.write(opening)
        await self.write_megabytes(response, mb)
        await response.write(b'"}]}}')
        await response.write_eof()
        return response

    async def sse_flood(self, request: web.Request, request_id: Any, mb: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: ")
        await self.write_megabytes(response, mb)
        await response.write(b"\n\n")
        await response.write_eof()
        return response

    async def write_megabytes(self, response: web.StreamResponse, mb: int) -> None:
        for _ in range(mb * 16):
            await response.write(CHUNK)


async def serve(port: int) -> None:
    runner = web.AppRunner(Misbehaving(port).app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="An upstream that misbehaves on purpose.")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
