"""A small MCP server over Streamable HTTP, written with aiohttp, used as a real upstream.

Run as `python -m tests.upstreams.mcp_server --port N` from the repository root, or as
`python tests/upstreams/mcp_server.py --port N`. It serves POST /mcp (and DELETE /mcp to end
a session), plus POST /admin/expire-sessions and GET /admin/stats for tests.

It is stricter than the specification asks, so that a lax client fails here: a request
must accept both JSON and SSE, and every request after `initialize` at protocol
2025-06-18 or later must carry the negotiated `MCP-Protocol-Version`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

JSON = dict[str, Any]
SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"


@dataclass
class Options:
    port: int
    page_size: int = 2
    sse: bool = False
    require_headers: dict[str, str] = field(default_factory=dict)
    session_ttl: float | None = None
    extra_tools: int = 0


@dataclass
class Session:
    protocol_version: str
    last_seen: float


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- tools ---------------------------------------------------------------------------------


def _object(properties: JSON, required: list[str] | None = None) -> JSON:
    schema: JSON = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


BASE_TOOLS: list[JSON] = [
    {
        "name": "echo",
        "title": "Echo",
        "description": "Return the text it is given.",
        "inputSchema": _object({"text": {"type": "string"}}, ["text"]),
        "outputSchema": _object({"text": {"type": "string"}}, ["text"]),
        "annotations": {"readOnlyHint": True, "idempotentHint": True},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": _object({"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]),
        "outputSchema": _object({"sum": {"type": "number"}}, ["sum"]),
    },
    {
        "name": "sleep",
        "description": "Wait for some seconds, then answer.",
        "inputSchema": _object({"seconds": {"type": "number", "minimum": 0}}, ["seconds"]),
    },
    {
        "name": "fail",
        "description": "Always fails, as a tool (isError), not as a protocol error.",
        "inputSchema": _object({}),
    },
    {
        "name": "big",
        "description": "Return n bytes of text.",
        "inputSchema": _object({"n": {"type": "integer", "minimum": 0}}, ["n"]),
    },
]


def text_result(text: str, structured: JSON | None = None, is_error: bool = False) -> JSON:
    result: JSON = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def _number(arguments: JSON, name: str) -> float:
    value = arguments.get(name)
    # bool is an int in Python but not a number in JSON Schema.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"argument {name!r} must be a number")
    return value


async def call_echo(arguments: JSON) -> JSON:
    text = arguments.get("text")
    if not isinstance(text, str):
        raise ValueError("argument 'text' must be a string")
    return text_result(text, {"text": text})


async def call_add(arguments: JSON) -> JSON:
    total = _number(arguments, "a") + _number(arguments, "b")
    return text_result(str(total), {"sum": total})


async def call_sleep(arguments: JSON) -> JSON:
    seconds = _number(arguments, "seconds")
    await asyncio.sleep(seconds)
    return text_result(f"slept {seconds:g}s")


async def call_fail(arguments: JSON) -> JSON:
    return text_result("this tool always fails", is_error=True)


async def call_big(arguments: JSON) -> JSON:
    n = arguments.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError("argument 'n' must be a non-negative integer")
    return text_result("x" * n)


ToolHandler = Callable[[JSON], Awaitable[JSON]]
BASE_HANDLERS: dict[str, ToolHandler] = {
    "echo": call_echo,
    "add": call_add,
    "sleep": call_sleep,
    "fail": call_fail,
    "big": call_big,
}


def _trivial(name: str) -> ToolHandler:
    async def handler(arguments: JSON) -> JSON:
        return text_result(name)

    return handler


# --- the server ----------------------------------------------------------------------------


class McpTestServer:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.tools = list(BASE_TOOLS)
        self.handlers = dict(BASE_HANDLERS)
        for i in range(options.extra_tools):
            name = f"t{i}"
            self.tools.append(
                {"name": name, "description": f"Trivial tool {i}.", "inputSchema": _object({})}
            )
            self.handlers[name] = _trivial(name)
        self.sessions: dict[str, Session] = {}
        self.peers: set[object] = set()
        self.stats: dict[str, int] = {
            "initialize": 0,
            "initialized_notifications": 0,
            "tools_list": 0,
            "tools_call": 0,
            "requests": 0,
            "sessions_deleted": 0,
            "sessions_expired": 0,
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/mcp", self.post)
        app.router.add_delete("/mcp", self.delete)
        app.router.add_post("/admin/expire-sessions", self.expire_sessions)
        app.router.add_get("/admin/stats", self.get_stats)
        return app

    # --- admin ---

    async def expire_sessions(self, request: web.Request) -> web.Response:
        count = len(self.sessions)
        self.sessions.clear()
        self.stats["sessions_expired"] += count
        return _json({"expired": count})

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json({**self.stats, "sessions": len(self.sessions), "connections": len(self.peers)})

    # --- MCP ---

    async def delete(self, request: web.Request) -> web.Response:
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        session_id = request.headers.get(SESSION_HEADER, "")
        if self.sessions.pop(session_id, None) is None:
            return _rpc_error_response(404, None, -32001, "Session not found")
        self.stats["sessions_deleted"] += 1
        return web.Response(status=204)

    async def post(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        if (refused := self._refuse_headers(request)) is not None:
            return refused
        try:
            message = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _rpc_error_response(400, None, -32700, "Parse error")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _rpc_error_response(400, None, -32600, "Invalid Request")
        method = message.get("method")
        if method == "initialize" and "id" in message:
            return await self._initialize(request, message)
        if (refused := self._check_session(request)) is not None:
            return refused
        if not isinstance(method, str) or "id" not in message:
            # A notification or a response to us: accepted, nothing to answer.
            if method == "notifications/initialized":
                self.stats["initialized_notifications"] += 1
            return web.Response(status=202)
        return await self._answer(request, message["id"], self._dispatch(method, message))

    def _refuse_headers(self, request: web.Request) -> web.Response | None:
        for name, value in self.options.require_headers.items():
            if request.headers.get(name) != value:
                return _rpc_error_response(401, None, -32001, f"Unauthorized: {name} required")
        if request.method != "POST":
            return None
        accept = request.headers.get("Accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            return _rpc_error_response(
                406, None, -32600, "Not Acceptable: accept application/json and text/event-stream"
            )
        if request.content_type != "application/json":
            return _rpc_error_response(415, None, -32600, "Content-Type must be application/json")
        return None

    def _check_session(self, request: web.Request) -> web.Response | None:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return _rpc_error_response(400, None, -32600, "Bad Request: no session id")
        session = self.sessions.get(session_id)
        now = time.monotonic()
        ttl = self.options.session_ttl
        if session is not None and ttl is not None and now - session.last_seen > ttl:
            del self.sessions[session_id]
            self.stats["sessions_expired"] += 1
            session = None
        if session is None:
            return _rpc_error_response(404, None, -32001, "Session not found")
        session.last_seen = now
        if session.protocol_version >= "2025-06-18":
            sent = request.headers.get(VERSION_HEADER)
            if sent != session.protocol_version:
                return _rpc_error_response(
                    400, None, -32600, f"Bad Request: {VERSION_HEADER} {sent!r} is not negotiated"
                )
        return None

    async def _initialize(self, request: web.Request, message: JSON) -> web.StreamResponse:
        self.stats["initialize"] += 1
        params = message.get("params") or {}
        asked = params.get("protocolVersion")
        version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
        session_id = uuid.uuid4().hex
        self.sessions[session_id] = Session(version, time.monotonic())

        async def result() -> JSON:
            return {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "own-upstream", "version": "1.0.0"},
            }

        return await self._answer(request, message["id"], result(), {SESSION_HEADER: session_id})

    async def _dispatch(self, method: str, message: JSON) -> JSON:
        params = message.get("params") or {}
        if method == "ping":
            return {}
        if method == "tools/list":
            self.stats["tools_list"] += 1
            return self._list_tools(params.get("cursor"))
        if method == "tools/call":
            self.stats["tools_call"] += 1
            return await self._call_tool(params)
        raise RpcError(-32601, f"Method not found: {method}")

    def _list_tools(self, cursor: Any) -> JSON:
        try:
            start = int(cursor) if cursor is not None else 0
        except (TypeError, ValueError):
            raise RpcError(-32602, f"Invalid cursor: {cursor!r}") from None
        end = start + self.options.page_size
        result: JSON = {"tools": self.tools[start:end]}
        if end < len(self.tools):
            result["nextCursor"] = str(end)
        return result

    async def _call_tool(self, params: JSON) -> JSON:
        name = params.get("name")
        handler = self.handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            raise RpcError(-32602, f"Unknown tool: {name}")
        arguments = params.get("arguments") or {}
        try:
            return await handler(arguments)
        except ValueError as exc:
            # Bad arguments are a tool execution error the model can read and correct.
            return text_result(str(exc), is_error=True)

    # --- answering, as JSON or as an event stream ---

    async def _answer(
        self,
        request: web.Request,
        request_id: Any,
        result: Awaitable[JSON],
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        if not self.options.sse:
            return _json(await _reply(request_id, result), headers=headers)
        stream_headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        response = web.StreamResponse(headers={**stream_headers, **(headers or {})})
        await response.prepare(request)
        # A comment and a notification before the response, as real servers send, so the
        # client has to skip them; the response's JSON spans several data lines.
        await response.write(b": stream opened\n\n")
        log = {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "data": "working"},
        }
        await response.write(b"event: message\nid: 1\ndata: " + orjson.dumps(log) + b"\n\n")
        reply = orjson.dumps(await _reply(request_id, result), option=orjson.OPT_INDENT_2)
        data = b"".join(b"data: " + line + b"\n" for line in reply.split(b"\n"))
        await response.write(b"event: message\nid: 2\n" + data + b"\n")
        await response.write_eof()
        return response


async def _reply(request_id: Any, result: Awaitable[JSON]) -> JSON:
    try:
        return {"jsonrpc": "2.0", "id": request_id, "result": await result}
    except RpcError as exc:
        error = {"code": exc.code, "message": exc.message}
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _rpc_error_response(status: int, request_id: Any, code: int, message: str) -> web.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return _json(body, status=status)


# --- command line --------------------------------------------------------------------------


def _header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {raw!r}")
    return name, value


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description="A small MCP Streamable HTTP test server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--page-size", type=int, default=2, help="tools per tools/list page")
    parser.add_argument("--sse", action="store_true", help="answer POSTs as SSE streams")
    parser.add_argument(
        "--require-header",
        type=_header,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="answer 401 unless this header is sent (repeatable)",
    )
    parser.add_argument(
        "--session-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="forget a session left unused for this long (answering 404 afterwards)",
    )
    parser.add_argument("--tools", type=int, default=0, help="add N trivial tools t0..tN-1")
    args = parser.parse_args(argv)
    return Options(
        port=args.port,
        page_size=max(1, args.page_size),
        sse=args.sse,
        require_headers=dict(args.require_header),
        session_ttl=args.session_ttl,
        extra_tools=args.tools,
    )


async def serve(options: Options) -> None:
    # A short shutdown timeout: a test that stops the server must not wait for a `sleep`.
    runner = web.AppRunner(McpTestServer(options).app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", options.port, backlog=1024).start()
    print(f"listening on http://127.0.0.1:{options.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_options(argv)))


if __name__ == "__main__":
    main()
