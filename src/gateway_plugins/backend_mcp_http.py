"""The `mcp-http` backend: one upstream MCP server reached over Streamable HTTP.

Each backend instance (one per upstream per worker) keeps one aiohttp session with a
keep-alive pool and one MCP session, initialised lazily on first use and re-initialised
once when the upstream forgets it (HTTP 404). Replies may be a JSON body or an SSE stream.
A reply's stream belongs to its request, so the progress and log notifications in it go to
that request's `on_notification` as they come; params go out as given, so the upstream sends
progress when the caller put a `_meta.progressToken` in them. Other notifications there,
like those on the listening stream, go to the listener.
With a listener set, the backend also holds the session's own GET event stream open for the
upstream's notifications, reconnecting with backoff (resuming with `Last-Event-ID`) when it
drops and reopening it for every new session.

`McpClient` holds what any MCP client transport needs beyond moving bytes (the SSE parser,
JSON-RPC replies and errors, paginated catalogues, progress tokens, cancellation, the
listener); `backend_mcp_sse` builds on it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
import structlog

from gateway import __version__
from gateway.contracts import (
    JSON,
    BackendError,
    BackendSpec,
    Notify,
    PromptDef,
    ResourceDef,
    ResourceTemplateDef,
    ToolDef,
    UpstreamConfig,
    UpstreamError,
)
from gateway.hookspecs import hookimpl

if TYPE_CHECKING:
    from gateway.plugins import Registrar
    from gateway.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

# 2025-06-18 rather than 2025-11-25: a 2025-11-25 server may close a reply's SSE stream
# early and expect the client to resume it with GET + Last-Event-ID, which this backend does
# only for its own listening stream, not for replies.
OFFERED_PROTOCOL_VERSION = "2025-06-18"
SUPPORTED_PROTOCOL_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
CLIENT_INFO: JSON = {"name": "aio-mcp-gateway", "version": __version__}

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"

# Below the 5 s idle timeout of uvicorn and Node.js, so the pool drops an idle connection
# before the upstream does, instead of racing it and failing a call on a dead socket.
KEEPALIVE_SECONDS = 4.0
# For courtesies (DELETE on close, notifications/cancelled): they must not hold anyone up.
CLOSE_TIMEOUT = 1.0
# How long to wait for an event stream to end once the answer is in; see `_finish_stream`.
STREAM_END_GRACE = 0.05
# Reconnecting a server-to-client stream: the first wait, doubling up to the last. A stream
# that delivered an event, or stayed up this long, starts again from the first.
RECONNECT_MIN = 0.25
RECONNECT_MAX = 30.0
STREAM_HEALTHY_SECONDS = 10.0

METHOD_NOT_FOUND = -32601
# Notifications a server sends about one request; others are the listener's.
REQUEST_NOTIFICATIONS = frozenset({"notifications/progress", "notifications/message"})


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
    with no data is not dispatched. Data stays bytes because orjson reads bytes. The last
    event id and the server's `retry` (milliseconds) are kept for a reconnect."""

    def __init__(self) -> None:
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
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event or "message", b"\n".join(data))


# --- JSON-RPC and HTTP helpers, shared by the MCP client backends --------------------------


def json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def new_http_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=1024, limit_per_host=256, keepalive_timeout=KEEPALIVE_SECONDS
    )
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=json_dumps,
        # The caller's asyncio.timeout bounds each exchange; aiohttp's 5-minute default
        # would only add a second, inconsistent limit (and end listening streams).
        timeout=aiohttp.ClientTimeout(total=None),
    )


def decode_json(upstream: str, raw: bytes, method: str) -> Any:
    if not raw.strip():
        raise BackendError(f"upstream {upstream!r} sent an empty reply to {method}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BackendError(
            f"upstream {upstream!r} sent invalid JSON in reply to {method}"
        ) from None


def json_messages(decoded: Any) -> list[JSON]:
    """The JSON-RPC messages in a decoded body; a pre-2025-06-18 server may batch them."""
    messages = decoded if isinstance(decoded, list) else [decoded]
    return [message for message in messages if isinstance(message, dict)]


def is_response(message: JSON) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


def params_of(message: JSON) -> JSON:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def rpc_result(upstream: str, reply: JSON, method: str) -> JSON:
    """The `result` of a JSON-RPC response; its `error` raises `UpstreamError`."""
    error = reply.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            raise BackendError(
                f"upstream {upstream!r} sent a malformed error for {method}: {one_line(str(error))}"
            )
        raise UpstreamError(upstream, code, str(error.get("message", "")), error.get("data"))
    result = reply.get("result")
    if not isinstance(result, dict):
        raise BackendError(f"upstream {upstream!r} sent a non-object result for {method}")
    return result


def server_request_reply(message: JSON) -> JSON:
    """Our answer to a request the server sends us: we answer `ping` and decline the rest,
    having declared no client capabilities (sampling, roots, elicitation)."""
    reply: JSON = {"jsonrpc": "2.0", "id": message.get("id")}
    if message.get("method") == "ping":
        reply["result"] = {}
    else:
        reply["error"] = {"code": METHOD_NOT_FOUND, "message": "Method not found"}
    return reply


class HttpStatusError(BackendError):
    """The upstream answered an HTTP error status: it refused the message, so there is no
    request of ours for it to cancel."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def http_error(upstream: str, resp: aiohttp.ClientResponse, what: str) -> HttpStatusError:
    detail = ""
    try:
        body = orjson.loads(await resp.read())
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = f": {one_line(str(body['error'].get('message', '')))}"
    except (orjson.JSONDecodeError, aiohttp.ClientError):
        pass
    return HttpStatusError(
        f"upstream {upstream!r} answered HTTP {resp.status} {resp.reason or ''}".rstrip()
        + f" to {what}{detail}",
        resp.status,
    )


def client_error(upstream: str, url: object, method: str, exc: aiohttp.ClientError) -> BackendError:
    where = f"upstream {upstream!r}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = os.strerror(exc.errno) if exc.errno else one_line(str(exc))
        message = f"{where} could not be reached at {url}: {reason}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        message = f"{where} closed the connection before answering {method}"
    elif isinstance(exc, aiohttp.ClientOSError):
        reason = os.strerror(exc.errno) if exc.errno else one_line(str(exc))
        message = f"{where} connection failed during {method}: {reason}"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        message = f"{where} sent a truncated reply to {method}"
    elif isinstance(exc, aiohttp.InvalidURL):
        message = f"{where} has an invalid URL {str(url)!r}"
    else:
        message = f"{where} failed during {method}: {type(exc).__name__}: {one_line(str(exc))}"
    return BackendError(message)


# --- catalogue mapping ---------------------------------------------------------------------


def _list(result: JSON, key: str) -> list[Any]:
    items = result.get(key)
    return items if isinstance(items, list) else []


def _dict_or_none(value: Any) -> JSON | None:
    return value if isinstance(value, dict) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# One malformed entry should not hide the rest of an upstream's catalogue: each mapping
# returns None for an entry it cannot use, and the entry is skipped.


def tool_def(item: Any) -> ToolDef | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        return None
    return ToolDef(
        name=item["name"],
        input_schema=_dict_or_none(item.get("inputSchema")) or {"type": "object"},
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        output_schema=_dict_or_none(item.get("outputSchema")),
        annotations=_dict_or_none(item.get("annotations")),
    )


def resource_def(item: Any) -> ResourceDef | None:
    if not isinstance(item, dict) or not isinstance(item.get("uri"), str) or not item["uri"]:
        return None
    size = item.get("size")
    return ResourceDef(
        uri=item["uri"],
        name=_str_or_none(item.get("name")) or item["uri"],
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        mime_type=_str_or_none(item.get("mimeType")),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        annotations=_dict_or_none(item.get("annotations")),
    )


def resource_template_def(item: Any) -> ResourceTemplateDef | None:
    if not isinstance(item, dict):
        return None
    template = item.get("uriTemplate")
    if not isinstance(template, str) or not template:
        return None
    return ResourceTemplateDef(
        uri_template=template,
        name=_str_or_none(item.get("name")) or template,
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        mime_type=_str_or_none(item.get("mimeType")),
        annotations=_dict_or_none(item.get("annotations")),
    )


def prompt_def(item: Any) -> PromptDef | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        return None
    arguments = item.get("arguments")
    return PromptDef(
        name=item["name"],
        description=_text(item.get("description")),
        title=_str_or_none(item.get("title")),
        arguments=tuple(
            argument
            for argument in (arguments if isinstance(arguments, list) else [])
            if isinstance(argument, dict) and isinstance(argument.get("name"), str)
        ),
    )


# --- what every MCP client transport shares ------------------------------------------------


@dataclass(slots=True, eq=False)
class Call:
    """One request on its way upstream, with what is needed to cancel it there."""

    method: str
    params: JSON | None
    on_notification: Notify | None = None
    request_id: int | None = None
    """Set when the request goes out (None again if it must be sent anew)."""
    sent_on: object = None
    """The transport's session or connection that carried it."""
    answered: bool = False


class McpClient(ABC):
    """The `FullBackend` logic of an MCP client, over a transport a subclass provides.

    Requests run under the caller's time budget. A timeout, a cancelled caller or any
    other abandonment sends `notifications/cancelled` for the request upstream (bounded by
    `CLOSE_TIMEOUT`) before the error or the cancellation goes on to the caller.
    """

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.url = upstream.url
        self.discovery_timeout = settings.tool_timeout
        self.capabilities: JSON = {}
        self._ids = itertools.count(1)
        self._listener: Notify | None = None

    # --- what a transport provides ---

    @abstractmethod
    async def _send(self, call: Call) -> JSON:
        """Send `call` (initialising first if need be) and return its JSON-RPC result."""

    @abstractmethod
    async def _send_cancel(self, call: Call, reason: str) -> None:
        """Tell the upstream that `call` (already sent) is abandoned."""

    @abstractmethod
    async def _send_notification(self, method: str, params: JSON | None) -> None: ...

    @abstractmethod
    async def _connect(self) -> None:
        """Make sure the MCP session is initialised, so `capabilities` are known."""

    # --- the Backend and FullBackend protocols ---

    async def connect(self) -> None:
        await self._within("initialize", self.discovery_timeout, self._connect())

    # The `timeout` parameters are the Backend contract; asyncio.timeout applies them inside.
    async def call_tool(self, name: str, arguments: JSON, timeout: float) -> JSON:
        return await self._request(
            Call("tools/call", {"name": name, "arguments": arguments}), timeout
        )

    async def request(
        self,
        method: str,
        params: JSON | None,
        timeout: float,
        on_notification: Notify | None = None,
    ) -> JSON:
        """Send one JSON-RPC request and return its `result`.

        The progress and log notifications the upstream sends about this request go to
        `on_notification`, in order and before the result (how a transport ties them to the
        request, and asks for progress, is in its module's docstring). A JSON-RPC error
        raises `UpstreamError`; every other failure `BackendError`.
        """
        return await self._request(Call(method, params, on_notification), timeout)

    async def notify(self, method: str, params: JSON | None) -> None:
        await self._within(method, self.discovery_timeout, self._send_notification(method, params))

    async def list_tools(self) -> list[ToolDef]:
        # Asked even without the capability: some servers with tools do not declare it.
        return await self._collect("tools/list", "tools", None, tool_def)

    async def list_resources(self) -> list[ResourceDef]:
        return await self._collect("resources/list", "resources", "resources", resource_def)

    async def list_resource_templates(self) -> list[ResourceTemplateDef]:
        return await self._collect(
            "resources/templates/list", "resourceTemplates", "resources", resource_template_def
        )

    async def list_prompts(self) -> list[PromptDef]:
        return await self._collect("prompts/list", "prompts", "prompts", prompt_def)

    # --- requests ---

    async def _request(self, call: Call, timeout: float) -> JSON:
        try:
            async with asyncio.timeout(timeout):
                return await self._send(call)
        except TimeoutError:
            await self._abandon(call, f"timed out after {timeout:g}s")
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({call.method})"
            ) from None
        except asyncio.CancelledError:
            await self._abandon(call, "cancelled by the client")
            raise
        except aiohttp.ClientError as exc:
            raise client_error(self.name, self.url, call.method, exc) from None
        except Exception:
            # Garbage on the stream, or an `on_notification` that raised: the request is
            # given up, so the upstream should stop working on it.
            await self._abandon(call, "abandoned by the client")
            raise

    async def _abandon(self, call: Call, reason: str) -> None:
        if call.request_id is None or call.answered:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._send_cancel(call, reason)
        # A courtesy only: whatever stops it (a dead upstream, a closed backend) must not
        # replace the error or the cancellation the caller is about to get.
        except Exception as exc:
            log.debug("could not cancel upstream request", upstream=self.name, error=repr(exc))

    async def _within(self, what: str, timeout: float, work: Awaitable[T]) -> T:
        """Await `work` under `timeout`, with the same one-line errors as requests."""
        try:
            async with asyncio.timeout(timeout):
                return await work
        except TimeoutError:
            raise BackendError(
                f"upstream {self.name!r} did not answer within {timeout:g}s ({what})"
            ) from None
        except aiohttp.ClientError as exc:
            raise client_error(self.name, self.url, what, exc) from None

    # --- catalogues ---

    async def _collect(
        self,
        method: str,
        key: str,
        capability: str | None,
        convert: Callable[[Any], T | None],
    ) -> list[T]:
        if capability is not None:
            await self._within("initialize", self.discovery_timeout, self._connect())
            if capability not in self.capabilities:
                return []
        items: list[T] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params = {"cursor": cursor} if cursor is not None else None
            try:
                result = await self._request(Call(method, params), self.discovery_timeout)
            except UpstreamError as exc:
                if exc.code == METHOD_NOT_FOUND:
                    return []
                raise
            items.extend(item for item in map(convert, _list(result, key)) if item is not None)
            next_cursor = result.get("nextCursor")
            if not next_cursor:
                return items
            if not isinstance(next_cursor, str) or next_cursor in seen:
                raise BackendError(f"upstream {self.name!r} sent a bad or repeated {method} cursor")
            seen.add(next_cursor)
            cursor = next_cursor

    # --- notifications from the upstream ---

    async def _deliver(self, method: str, params: JSON) -> None:
        """Hand a notification to the listener, if any; its failure must not end a stream."""
        listener = self._listener
        if listener is None:
            return
        try:
            await listener(method, params)
        except Exception:
            log.exception(
                "upstream notification listener failed", upstream=self.name, method=method
            )


# --- the Streamable HTTP backend -----------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _McpSession:
    session_id: str | None
    protocol_version: str
    headers: Mapping[str, str]
    capabilities: JSON


class _SessionExpired(HttpStatusError):
    """The upstream answered 404 to a message that carried a session id."""

    def __init__(self, upstream: str, method: str) -> None:
        super().__init__(
            f"upstream {upstream!r} answered HTTP 404 to {method}: no such session", 404
        )


class _Outcome(Enum):
    NO_STREAM = auto()
    EXPIRED = auto()
    ENDED = auto()


@dataclass(slots=True)
class _StreamState:
    """What one listening stream carries over its reconnects."""

    last_event_id: str = ""
    retry: float | None = None
    delay: float = RECONNECT_MIN

    def next_delay(self) -> float:
        # The server's `retry` is a least wait; our backoff may ask for more.
        delay = max(self.retry or 0.0, self.delay)
        self.delay = min(self.delay * 2, RECONNECT_MAX)
        return delay


class McpHttpBackend(McpClient):
    """A `FullBackend` for one upstream MCP server speaking Streamable HTTP."""

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        super().__init__(upstream, settings)
        self._base_headers: dict[str, str] = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **upstream.headers,
        }
        self._http: aiohttp.ClientSession | None = None
        self._session: _McpSession | None = None
        self._session_lock = asyncio.Lock()
        self._await_stream_end = True
        self._listening: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    # --- lifecycle ---

    async def start(self) -> None:
        # No network here: the first call initialises, so an upstream that is down does not
        # hold up a worker's start-up.
        self._http = new_http_session()

    async def close(self) -> None:
        http, session = self._http, self._session
        self._http, self._session = None, None
        self._stop_listening()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
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

    def set_listener(self, listener: Notify | None) -> None:
        """Keep the session's GET event stream open while a listener is set: from when a
        session is initialised (by the first request, not by this) until `close()`."""
        self._listener = listener
        if listener is None:
            self._stop_listening()
        elif self._session is not None and self._http is not None:
            if self._listening is None or self._listening.done():
                self._listening = asyncio.create_task(self._listen())

    # --- the transport ---

    async def _connect(self) -> None:
        await self._current_session()

    async def _send(self, call: Call) -> JSON:
        session = await self._current_session()
        try:
            return await self._exchange(session, call)
        except _SessionExpired:
            session = await self._renew_session(session)
        try:
            return await self._exchange(session, call)
        except _SessionExpired:
            raise BackendError(
                f"upstream {self.name!r} answered HTTP 404 to {call.method} "
                "with a freshly initialised session"
            ) from None

    async def _send_cancel(self, call: Call, reason: str) -> None:
        session = call.sent_on
        if isinstance(session, _McpSession) and self._http is not None:
            params = {"requestId": call.request_id, "reason": reason}
            await self._post_notification(session, "notifications/cancelled", params)

    async def _send_notification(self, method: str, params: JSON | None) -> None:
        session = await self._current_session()
        try:
            await self._post_notification(session, method, params)
        except _SessionExpired:
            # A notification belongs to its session; a new session would not understand it.
            raise BackendError(
                f"upstream {self.name!r} no longer knows the session; {method} not delivered"
            ) from None

    # --- the MCP session ---

    async def _current_session(self) -> _McpSession:
        session = self._session
        if session is not None:
            return session
        async with self._session_lock:
            session = self._session
            if session is None:
                session = await self._initialize()
                self._install(session)
            return session

    async def _renew_session(self, stale: _McpSession) -> _McpSession:
        async with self._session_lock:
            session = self._session
            # Many calls can see the same 404; only the first of them re-initialises.
            if session is stale or session is None:
                self._session = None
                session = await self._initialize()
                self._install(session)
            return session

    def _install(self, session: _McpSession) -> None:
        self._session = session
        self.capabilities = session.capabilities
        if self._listener is None or self._http is None:
            return
        task = self._listening
        if task is not None and task is asyncio.current_task():
            return  # the listening task renewed the session itself and carries on with it
        self._stop_listening()
        self._listening = asyncio.create_task(self._listen())

    async def _initialize(self) -> _McpSession:
        params: JSON = {
            "protocolVersion": OFFERED_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        }
        message = {
            "jsonrpc": "2.0",
            "id": next(self._ids),
            "method": "initialize",
            "params": params,
        }
        reply, headers = await self._post(self._base_headers, message, None, None)
        result = rpc_result(self.name, reply, "initialize")
        version = result.get("protocolVersion")
        if version not in SUPPORTED_PROTOCOL_VERSIONS:
            raise BackendError(
                f"upstream {self.name!r} chose unsupported protocol version {version!r}"
            )
        session_id = headers.get(SESSION_HEADER)
        session_headers = {**self._base_headers, VERSION_HEADER: str(version)}
        if session_id:
            session_headers[SESSION_HEADER] = session_id
        capabilities = _dict_or_none(result.get("capabilities")) or {}
        session = _McpSession(session_id or None, str(version), session_headers, capabilities)
        await self._post_notification(session, "notifications/initialized", None)
        return session

    async def _post_notification(
        self, session: _McpSession, method: str, params: JSON | None
    ) -> None:
        message: JSON = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        body = orjson.dumps(message)
        async with self._client().post(self.url, data=body, headers=session.headers) as resp:
            if resp.status == 404 and session.session_id is not None:
                raise _SessionExpired(self.name, method)
            if resp.status >= 300:
                raise await http_error(self.name, resp, method)

    # --- one exchange ---

    async def _exchange(self, session: _McpSession, call: Call) -> JSON:
        request_id = next(self._ids)
        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": call.method}
        if call.params is not None:
            message["params"] = call.params
        call.request_id, call.sent_on = request_id, session
        try:
            reply, _ = await self._post(session.headers, message, session, call.on_notification)
        except HttpStatusError:
            call.request_id = None
            raise
        call.answered = True
        return rpc_result(self.name, reply, call.method)

    async def _post(
        self,
        headers: Mapping[str, str],
        message: JSON,
        session: _McpSession | None,
        on_notification: Notify | None,
    ) -> tuple[JSON, Mapping[str, str]]:
        method, request_id = message["method"], message["id"]
        async with self._client().post(
            self.url, data=orjson.dumps(message), headers=headers
        ) as resp:
            if resp.status == 404 and session is not None and session.session_id is not None:
                raise _SessionExpired(self.name, method)
            if resp.status >= 300:
                raise await http_error(self.name, resp, method)
            if resp.content_type == "text/event-stream":
                reply = await self._read_stream(resp, request_id, method, headers, on_notification)
            else:
                reply = await self._read_body(resp, request_id, method)
            return reply, resp.headers

    async def _read_body(self, resp: aiohttp.ClientResponse, request_id: int, method: str) -> JSON:
        for message in json_messages(decode_json(self.name, await resp.read(), method)):
            if message.get("id") == request_id and is_response(message):
                return message
        raise BackendError(f"upstream {self.name!r} sent no response to {method} (id {request_id})")

    async def _read_stream(
        self,
        resp: aiohttp.ClientResponse,
        request_id: int,
        method: str,
        headers: Mapping[str, str],
        on_notification: Notify | None,
    ) -> JSON:
        async def route(name: str, params: JSON) -> None:
            if name not in REQUEST_NOTIFICATIONS:
                await self._deliver(name, params)
            elif on_notification is not None:
                await on_notification(name, params)

        parser = SseParser()
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                # Other event types carry no JSON-RPC; an event with empty data only primes
                # a resumable stream.
                if event.event != "message" or not event.data.strip():
                    continue
                for message in json_messages(decode_json(self.name, event.data, method)):
                    if message.get("id") == request_id and is_response(message):
                        await self._finish_stream(resp)
                        return message
                    await self._on_message(message, headers, route)
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

    async def _on_message(self, message: JSON, headers: Mapping[str, str], route: Notify) -> None:
        """A server request or notification on one of our streams; responses to other
        requests are not ours to handle."""
        method = message.get("method")
        if not isinstance(method, str):
            return
        if "id" not in message:
            await route(method, params_of(message))
            return
        # A server that asks us something may wait for the answer before it goes on.
        body = orjson.dumps(server_request_reply(message))
        try:
            async with self._client().post(self.url, data=body, headers=headers):
                pass
        except aiohttp.ClientError as exc:
            log.info("could not answer upstream request", upstream=self.name, error=repr(exc))

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        return self._http

    # --- the listening stream (GET) ---

    def _stop_listening(self) -> None:
        task, self._listening = self._listening, None
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _listen(self) -> None:
        """Hold the session's event stream open: reconnect when it drops, renew the
        session when the upstream forgot it, stop when the upstream has no stream (405)."""
        state = _StreamState()
        stream_session: _McpSession | None = None
        while self._http is not None and self._listener is not None:
            try:
                session = self._session
                if session is None:
                    session = await self._within(
                        "initialize", self.discovery_timeout, self._current_session()
                    )
                if session is not stream_session:
                    stream_session, state = session, _StreamState()
                outcome = await self._listen_once(session, state)
                if outcome is _Outcome.NO_STREAM:
                    return
                if outcome is _Outcome.EXPIRED:
                    await self._within(
                        "initialize", self.discovery_timeout, self._renew_session(session)
                    )
                    continue
            except (BackendError, aiohttp.ClientError, TimeoutError) as exc:
                log.info("upstream event stream failed", upstream=self.name, error=str(exc))
            except Exception:
                # Whatever went wrong, notifications matter enough to keep trying.
                log.exception("upstream event stream failed", upstream=self.name)
            await asyncio.sleep(state.next_delay())

    async def _listen_once(self, session: _McpSession, state: _StreamState) -> _Outcome:
        headers = {name: value for name, value in session.headers.items() if name != "Content-Type"}
        headers["Accept"] = "text/event-stream"
        if state.last_event_id:
            headers["Last-Event-ID"] = state.last_event_id
        async with asyncio.timeout(self.discovery_timeout):
            resp = await self._client().get(self.url, headers=headers)
        try:
            if resp.status == 405:
                return _Outcome.NO_STREAM
            if resp.status == 404 and session.session_id is not None:
                return _Outcome.EXPIRED
            if resp.status >= 300:
                raise await http_error(self.name, resp, "GET (event stream)")
            if resp.content_type != "text/event-stream":
                raise BackendError(
                    f"upstream {self.name!r} answered GET (event stream) with {resp.content_type}"
                )
            loop = asyncio.get_running_loop()
            opened = loop.time()
            parser = SseParser()
            async for chunk in resp.content.iter_any():
                for event in parser.feed(chunk):
                    state.delay = RECONNECT_MIN
                    await self._on_listen_event(session, event)
                if parser.last_event_id:
                    state.last_event_id = parser.last_event_id
                if parser.retry is not None:
                    state.retry = parser.retry / 1000
            if loop.time() - opened >= STREAM_HEALTHY_SECONDS:
                state.delay = RECONNECT_MIN
            return _Outcome.ENDED
        finally:
            resp.close()

    async def _on_listen_event(self, session: _McpSession, event: SseEvent) -> None:
        if event.event != "message" or not event.data.strip():
            return
        try:
            decoded = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            log.info("upstream sent invalid JSON on its event stream", upstream=self.name)
            return
        for message in json_messages(decoded):
            await self._on_message(message, session.headers, self._deliver)


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
