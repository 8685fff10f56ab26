"""The `mcp-http` backend: one upstream MCP server reached over Streamable HTTP.

Each backend instance (one per upstream per worker) keeps one aiohttp session with a
keep-alive pool and one MCP session, initialised lazily on first use and re-initialised
once when the upstream forgets it (HTTP 404). Replies may be a JSON body or an SSE stream.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import orjson

from gateway import __version__
from gateway.contracts import JSON, BackendError, BackendSpec, ToolDef, UpstreamConfig
from gateway.hookspecs import hookimpl

if TYPE_CHECKING:
    from gateway.plugins import Registrar
    from gateway.settings import Settings

# 2025-06-18 rather than 2025-11-25: a 2025-11-25 server may close an SSE stream early and
# expect the client to resume it with GET + Last-Event-ID, which this backend does not do.
OFFERED_PROTOCOL_VERSION = "2025-06-18"
SUPPORTED_PROTOCOL_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"

# Below the 5 s idle timeout of uvicorn and Node.js, so the pool drops an idle connection
# before the upstream does, instead of racing it and failing a call on a dead socket.
KEEPALIVE_SECONDS = 4.0
CLOSE_TIMEOUT = 1.0
# How long to wait for an event stream to end once the answer is in; see `_finish_stream`.
STREAM_END_GRACE = 0.05


# --- server-sent events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: bytes


_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SseParser:
    """Incremental `text/event-stream` parser (WHATWG rules): any of CR, LF or CRLF ends a
    line, `data` fields join with LF, comments and unknown fields are skipped, and an event
    with no data is not dispatched. Data stays bytes because orjson reads bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0
        self._data: list[bytes] = []
        self._event = ""
        self._started = False
        self._skip_lf = False
        self.last_event_id = ""

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
        while (match := _EOL.search(buf, pos)) is not None:
            event = self._line(bytes(buf[start : match.start()]))
            if event is not None:
                events.append(event)
            start = pos = match.end()
        # A CR at the very end is taken as a line end now, so an event is not held back
        # waiting for a byte that may never come.
        self._skip_lf = buf.endswith(b"\r")
        del buf[:start]
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
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self.last_event_id = value.decode("utf-8", "replace")
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event or "message", b"\n".join(data))


# --- the backend ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _McpSession:
    session_id: str | None
    protocol_version: str
    headers: Mapping[str, str]


class _SessionExpired(Exception):
    """The upstream answered 404 to a request that carried a session id."""


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class McpHttpBackend:
    """A `Backend` for one upstream MCP server speaking Streamable HTTP."""

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.url = upstream.url
        self.discovery_timeout = settings.tool_timeout
        self._base_headers: dict[str, str] = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **upstream.headers,
        }
        self._http: aiohttp.ClientSession | None = None
        self._session: _McpSession | None = None
        self._session_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._await_stream_end = True

    # --- lifecycle ---

    async def start(self) -> None:
        # No network here: the first call initialises, so an upstream that is down does not
        # hold up a worker's start-up.
        connector = aiohttp.TCPConnector(
            limit=1024, limit_per_host=256, keepalive_timeout=KEEPALIVE_SECONDS
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            json_serialize=_json_dumps,
            # The caller's asyncio.timeout bounds each exchange; aiohttp's 5-minute default
            # would only add a second, inconsistent limit.
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        http, session = self._http, self._session
        self._http, self._session = None, None
        if http is None:
            return
        if session is not None and session.session_id is not None:
            await self._terminate(http, session)
        await http.close()

    async def _terminate(self, http: aiohttp.ClientSession, session: _McpSession) -> None:
        # Courtesy only (the spec's DELETE): an upstream that is gone must not slow shutdown.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                async with http.delete(self.url, headers=session.headers):
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass

    # --- the Backend protocol ---

    async def list_tools(self) -> list[ToolDef]:
        tools: list[ToolDef] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params = {"cursor": cursor} if cursor is not None else None
            result = await self.request("tools/list", params, self.discovery_timeout)
            tools.extend(_tool_def(item) for item in _list(result, "tools") if _is_tool(item))
            cursor = result.get("nextCursor")
            if not cursor:
                return tools
            if not isinstance(cursor, str) or cursor in seen:
                raise BackendError(f"upstream {self.name!r} sent a bad or repeated tools cursor")
            seen.add(cursor)

    # The `timeout` parameters are the Backend contract; asyncio.timeout applies them inside.
    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        return await self.request("tools/call", {"name": name, "arguments": arguments}, timeout)

    # --- any JSON-RPC method ---

    async def request(self, method: str, params: JSON | None, timeout: float) -> JSON:
        """Send one JSON-RPC request on the shared MCP session and return its `result`.

        Raises `BackendError` with a one-line message for every way the exchange can fail.
        """
        try:
            async with asyncio.timeout(timeout):
                session = await self._current_session()
                try:
                    return await self._exchange(session, method, params)
                except _SessionExpired:
                    session = await self._renew_session(session)
                    try:
                        return await self._exchange(session, method, params)
                    except _SessionExpired:
                        raise BackendError(
                            f"upstream {self.name!r} answered HTTP 404 to {method} "
                            "with a freshly initialised session"
                        ) from None
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({method})"
            ) from None
        except aiohttp.ClientError as exc:
            self._fail(method, exc)

    # --- the MCP session ---

    async def _current_session(self) -> _McpSession:
        session = self._session
        if session is not None:
            return session
        async with self._session_lock:
            if self._session is None:
                self._session = await self._initialize()
            return self._session

    async def _renew_session(self, stale: _McpSession) -> _McpSession:
        async with self._session_lock:
            # Many calls can see the same 404; only the first of them re-initialises.
            if self._session is stale or self._session is None:
                self._session = None
                self._session = await self._initialize()
            return self._session

    async def _initialize(self) -> _McpSession:
        params: JSON = {
            "protocolVersion": OFFERED_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "aio-mcp-gateway", "version": __version__},
        }
        result, headers = await self._post(self._base_headers, "initialize", params)
        version = result.get("protocolVersion")
        if version not in SUPPORTED_PROTOCOL_VERSIONS:
            raise BackendError(
                f"upstream {self.name!r} chose unsupported protocol version {version!r}"
            )
        session_id = headers.get(SESSION_HEADER)
        session_headers = {**self._base_headers, VERSION_HEADER: str(version)}
        if session_id:
            session_headers[SESSION_HEADER] = session_id
        session = _McpSession(session_id or None, str(version), session_headers)
        await self._notify(session, "notifications/initialized")
        return session

    async def _notify(self, session: _McpSession, method: str) -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "method": method})
        async with self._client().post(self.url, data=body, headers=session.headers) as resp:
            if resp.status >= 300:
                raise BackendError(
                    f"upstream {self.name!r} answered HTTP {resp.status} to {method}"
                )

    # --- one exchange ---

    async def _exchange(self, session: _McpSession, method: str, params: JSON | None) -> JSON:
        result, _ = await self._post(session.headers, method, params, session.session_id)
        return result

    async def _post(
        self,
        headers: Mapping[str, str],
        method: str,
        params: JSON | None,
        session_id: str | None = None,
    ) -> tuple[JSON, Mapping[str, str]]:
        request_id = next(self._ids)
        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        async with self._client().post(
            self.url, data=orjson.dumps(message), headers=headers
        ) as resp:
            if resp.status == 404 and session_id is not None:
                raise _SessionExpired
            if resp.status >= 300:
                await self._http_error(resp, method)
            if resp.content_type == "text/event-stream":
                reply = await self._read_stream(resp, request_id, method)
            else:
                reply = await self._read_body(resp, request_id, method)
            return self._result(reply, method), resp.headers

    async def _read_body(self, resp: aiohttp.ClientResponse, request_id: int, method: str) -> JSON:
        reply = self._match(self._decode(await resp.read(), method), request_id)
        if reply is None:
            raise BackendError(
                f"upstream {self.name!r} sent no response to {method} (id {request_id})"
            )
        return reply

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, request_id: int, method: str
    ) -> JSON:
        parser = SseParser()
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                # Other event types carry no JSON-RPC; notifications and server requests
                # sent before the response are of no use to a single call.
                if event.event != "message":
                    continue
                reply = self._match(self._decode(event.data, method), request_id)
                if reply is not None:
                    await self._finish_stream(resp)
                    return reply
        raise BackendError(
            f"upstream {self.name!r} ended its event stream without answering {method}"
        )

    async def _finish_stream(self, resp: aiohttp.ClientResponse) -> None:
        # A stream read to its end lets the connection go back to the pool; servers end it
        # right after the answer. One that keeps streams open loses this after one miss, so
        # it costs a reconnect per call rather than a wait per call.
        if resp.content.at_eof() or not self._await_stream_end:
            return
        try:
            async with asyncio.timeout(STREAM_END_GRACE):
                while await resp.content.readany():
                    pass
        except TimeoutError:
            self._await_stream_end = False

    def _decode(self, raw: bytes, method: str) -> Any:
        if not raw.strip():
            raise BackendError(f"upstream {self.name!r} sent an empty reply to {method}")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BackendError(
                f"upstream {self.name!r} sent invalid JSON in reply to {method}"
            ) from None

    @staticmethod
    def _match(decoded: Any, request_id: int) -> JSON | None:
        # A pre-2025-06-18 server may batch messages into one array.
        messages = decoded if isinstance(decoded, list) else [decoded]
        for message in messages:
            if (
                isinstance(message, dict)
                and message.get("id") == request_id
                and ("result" in message or "error" in message)
            ):
                return message
        return None

    def _result(self, reply: JSON, method: str) -> JSON:
        error = reply.get("error")
        if error is not None:
            if isinstance(error, dict):
                code, text = error.get("code"), _one_line(str(error.get("message", "")))
            else:
                code, text = None, _one_line(str(error))
            raise BackendError(
                f"upstream {self.name!r} answered {method} with error {code}: {text}"
            )
        result = reply.get("result")
        if not isinstance(result, dict):
            raise BackendError(f"upstream {self.name!r} sent a non-object result for {method}")
        return result

    async def _http_error(self, resp: aiohttp.ClientResponse, method: str) -> NoReturn:
        detail = ""
        try:
            body = orjson.loads(await resp.read())
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                detail = f": {_one_line(str(body['error'].get('message', '')))}"
        except (orjson.JSONDecodeError, aiohttp.ClientError):
            pass
        raise BackendError(
            f"upstream {self.name!r} answered HTTP {resp.status} {resp.reason or ''}".rstrip()
            + f" to {method}{detail}"
        )

    def _fail(self, method: str, exc: aiohttp.ClientError) -> NoReturn:
        where = f"upstream {self.name!r}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = os.strerror(exc.errno) if exc.errno else _one_line(str(exc))
            message = f"{where} could not be reached at {self.url}: {reason}"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            message = f"{where} closed the connection before answering {method}"
        elif isinstance(exc, aiohttp.ClientOSError):
            reason = os.strerror(exc.errno) if exc.errno else _one_line(str(exc))
            message = f"{where} connection failed during {method}: {reason}"
        elif isinstance(exc, aiohttp.ClientPayloadError):
            message = f"{where} sent a truncated reply to {method}"
        elif isinstance(exc, aiohttp.InvalidURL):
            message = f"{where} has an invalid URL {self.url!r}"
        else:
            message = f"{where} failed during {method}: {type(exc).__name__}: {_one_line(str(exc))}"
        raise BackendError(message) from None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        return self._http


# --- tools/list mapping --------------------------------------------------------------------


def _list(result: JSON, key: str) -> list[Any]:
    items = result.get(key)
    return items if isinstance(items, list) else []


def _is_tool(item: Any) -> bool:
    # One malformed entry should not hide the rest of an upstream's catalogue.
    return isinstance(item, dict) and isinstance(item.get("name"), str) and bool(item["name"])


def _dict_or_none(value: Any) -> JSON | None:
    return value if isinstance(value, dict) else None


def _tool_def(item: JSON) -> ToolDef:
    title = item.get("title")
    return ToolDef(
        name=item["name"],
        input_schema=_dict_or_none(item.get("inputSchema")) or {"type": "object"},
        description=str(item.get("description") or ""),
        title=title if isinstance(title, str) else None,
        output_schema=_dict_or_none(item.get("outputSchema")),
        annotations=_dict_or_none(item.get("annotations")),
    )


# --- registration --------------------------------------------------------------------------


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="mcp-http",
            transport="streamable-http",
            factory=McpHttpBackend,
            description="An upstream MCP server over Streamable HTTP (JSON or SSE replies).",
        )
    )
