"""The `mcp-sse` backend: one upstream MCP server on the legacy HTTP+SSE transport (2024-11-05).

The backend GETs the upstream's event stream, whose first event, `endpoint`, names the URL
(resolved against the stream's, and of the same origin) that takes our JSON-RPC messages by
POST. Every reply and notification comes back on that one stream: replies are matched to
the waiting requests by id, and progress notifications to requests by progress token. So a
request given an `on_notification` goes out with a token unique on this connection, and its
progress comes back to `on_notification` under the caller's own `_meta.progressToken` (or
the unique one, if the caller sent none). Log messages and the upstream's other
notifications cannot be tied to a request on this transport: they go to the listener.

The MCP session lives as long as the stream. When the stream drops, the requests waiting on
it fail with `BackendError`; the next request opens a new stream and initialises again, as
does a background task with backoff while a listener is set.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
import orjson
import structlog

from gateway.contracts import JSON, BackendError, BackendSpec, Notify, UpstreamConfig
from gateway.hookspecs import hookimpl
from gateway_plugins.backend_mcp_http import (
    CLIENT_INFO,
    RECONNECT_MAX,
    RECONNECT_MIN,
    SUPPORTED_PROTOCOL_VERSIONS,
    Call,
    HttpStatusError,
    McpClient,
    SseEvent,
    SseParser,
    http_error,
    json_messages,
    new_http_session,
    one_line,
    params_of,
    rpc_result,
    server_request_reply,
)

if TYPE_CHECKING:
    from gateway.plugins import Registrar
    from gateway.settings import Settings

log = structlog.get_logger(__name__)

PROTOCOL_VERSION = "2024-11-05"


def _progress_token(params: JSON | None) -> Any:
    meta = params.get("_meta") if params else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def _with_progress_token(params: JSON | None, token: Any) -> JSON:
    """A copy of `params` asking for progress under `token`; the caller's dict is untouched."""
    params = dict(params or {})
    meta = params.get("_meta")
    params["_meta"] = {**(meta if isinstance(meta, dict) else {}), "progressToken": token}
    return params


class _SessionGone(HttpStatusError):
    """The upstream answered 404 to a POST: it no longer knows the stream's session."""

    def __init__(self, upstream: str, method: str) -> None:
        super().__init__(
            f"upstream {upstream!r} answered HTTP 404 to {method}: no such session", 404
        )


class _Connection:
    """One event stream: where to POST, and the requests waiting for replies on it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.post_url: str | None = None
        self.ready = asyncio.Event()
        """Set once the endpoint is known, or the stream is lost before it was."""
        self.capabilities: JSON = {}
        self.pending: dict[int, tuple[str, asyncio.Future[JSON]]] = {}
        self.progress: dict[str, tuple[Notify, Any, asyncio.Future[JSON]]] = {}
        """Our progress token -> the request's `on_notification`, the caller's token and
        the future of the request's reply."""
        self.reader: asyncio.Task[None] | None = None
        self.lost: str | None = None
        """Why the stream ended (`upstream 'x' <lost> before answering ...`), once it has."""
        self.error: BackendError | None = None


class McpSseBackend(McpClient):
    """A `FullBackend` for one upstream MCP server on the HTTP+SSE transport."""

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        super().__init__(upstream, settings)
        self._stream_headers = {**upstream.headers, "Accept": "text/event-stream"}
        self._post_headers = {**upstream.headers, "Content-Type": "application/json"}
        self._http: aiohttp.ClientSession | None = None
        self._conn: _Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._reconnecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tokens = itertools.count(1)
        self._closed = False

    # --- lifecycle ---

    async def start(self) -> None:
        # No network here: the first request connects.
        self._http = new_http_session()

    async def close(self) -> None:
        self._closed = True
        http, conn = self._http, self._conn
        self._http, self._conn = None, None
        tasks = [*self._tasks]
        if self._reconnecting is not None:
            tasks.append(self._reconnecting)
        if conn is not None:
            self._end(conn, "was closed")
            if conn.reader is not None:
                tasks.append(conn.reader)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if http is not None:
            await http.close()

    def set_listener(self, listener: Notify | None) -> None:
        """Where the upstream's notifications go. While one is set, a stream that drops is
        reopened in the background rather than at the next request."""
        self._listener = listener
        if listener is None:
            if self._reconnecting is not None:
                self._reconnecting.cancel()
        elif self._conn is not None and self._conn.lost is not None:
            self._reconnect()

    # --- the transport ---

    async def _connect(self) -> None:
        await self._connection()

    async def _send(self, call: Call) -> JSON:
        conn = await self._connection()
        try:
            return await self._round_trip(conn, call)
        except _SessionGone:
            self._end(conn, "forgot the session")
        try:
            return await self._round_trip(await self._connection(), call)
        except _SessionGone:
            raise BackendError(
                f"upstream {self.name!r} answered HTTP 404 to {call.method} on a new connection"
            ) from None

    async def _send_cancel(self, call: Call, reason: str) -> None:
        conn = call.sent_on
        if isinstance(conn, _Connection) and conn.lost is None:
            params = {"requestId": call.request_id, "reason": reason}
            await self._post(conn, _notification("notifications/cancelled", params))

    async def _send_notification(self, method: str, params: JSON | None) -> None:
        try:
            await self._post(await self._connection(), _notification(method, params))
        except _SessionGone:
            raise BackendError(
                f"upstream {self.name!r} no longer knows the session; {method} not delivered"
            ) from None

    async def _round_trip(self, conn: _Connection, call: Call) -> JSON:
        request_id = next(self._ids)
        params = call.params
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        token: str | None = None
        if call.on_notification is not None:
            # The stream is shared by every request: a token of our own routes progress back
            # to this one even when two callers picked the same token.
            token = f"aio-mcp-gateway-{next(self._tokens)}"
            caller_token = _progress_token(params)
            shown = token if caller_token is None else caller_token
            conn.progress[token] = (call.on_notification, shown, future)
            params = _with_progress_token(params, token)
        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": call.method}
        if params is not None:
            message["params"] = params
        conn.pending[request_id] = (call.method, future)
        try:
            call.request_id, call.sent_on = request_id, conn
            try:
                await self._post(conn, message)
            except HttpStatusError:
                call.request_id = None
                raise
            reply = await future
        finally:
            del conn.pending[request_id]
            if token is not None:
                del conn.progress[token]
        call.answered = True
        return rpc_result(self.name, reply, call.method)

    async def _post(self, conn: _Connection, message: JSON) -> None:
        if conn.post_url is None or conn.lost is not None:
            raise BackendError(f"upstream {self.name!r} {conn.lost or 'has no endpoint yet'}")
        body = orjson.dumps(message)
        async with self._client().post(
            conn.post_url, data=body, headers=self._post_headers
        ) as resp:
            if resp.status == 404:
                raise _SessionGone(self.name, message["method"])
            if resp.status >= 300:
                raise await http_error(self.name, resp, message["method"])

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise BackendError(f"upstream {self.name!r}: not started or already closed")
        return self._http

    # --- the connection ---

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        async with self._conn_lock:
            conn = self._conn
            if conn is None or conn.lost is not None:
                conn = await self._open()
                self._conn = conn
                self.capabilities = conn.capabilities
            return conn

    async def _open(self) -> _Connection:
        resp = await self._client().get(self.url, headers=self._stream_headers)
        conn = _Connection(resp)
        try:
            if resp.status >= 300:
                raise await http_error(self.name, resp, "GET (event stream)")
            if resp.content_type != "text/event-stream":
                raise BackendError(
                    f"upstream {self.name!r} answered GET (event stream) with {resp.content_type}"
                )
            conn.reader = asyncio.create_task(self._read(conn))
            await conn.ready.wait()
            if conn.error is not None:
                raise conn.error
            if conn.lost is not None:
                raise BackendError(f"upstream {self.name!r} {conn.lost} before naming its endpoint")
            params: JSON = {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": CLIENT_INFO,
            }
            result = await self._round_trip(conn, Call("initialize", params))
            version = result.get("protocolVersion")
            if version not in SUPPORTED_PROTOCOL_VERSIONS:
                raise BackendError(
                    f"upstream {self.name!r} chose unsupported protocol version {version!r}"
                )
            capabilities = result.get("capabilities")
            conn.capabilities = capabilities if isinstance(capabilities, dict) else {}
            await self._post(conn, _notification("notifications/initialized", None))
            return conn
        except BaseException:
            self._end(conn, "was abandoned")
            raise

    def _end(self, conn: _Connection, reason: str) -> None:
        """Give up on a connection: fail what waits on it and stop reading it."""
        if conn.lost is None:
            conn.lost = reason
        for method, future in conn.pending.values():
            if not future.done():
                future.set_exception(
                    BackendError(f"upstream {self.name!r} {conn.lost} before answering {method}")
                )
        conn.ready.set()
        conn.response.close()
        if conn.reader is not None and conn.reader is not asyncio.current_task():
            conn.reader.cancel()

    def _reconnect(self) -> None:
        if self._closed or self._listener is None:
            return
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._keep_connected())

    async def _keep_connected(self) -> None:
        delay = RECONNECT_MIN
        while not self._closed and self._listener is not None:
            try:
                await self._within("initialize", self.discovery_timeout, self._connection())
                return
            except BackendError as exc:
                log.info(
                    "upstream event stream reconnect failed", upstream=self.name, error=str(exc)
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    # --- reading the stream ---

    async def _read(self, conn: _Connection) -> None:
        parser = SseParser()
        reason = "closed its event stream"
        try:
            async for chunk in conn.response.content.iter_any():
                for event in parser.feed(chunk):
                    await self._on_event(conn, event)
                    if conn.lost is not None:
                        return
        except aiohttp.ClientError as exc:
            reason = f"lost its event stream ({type(exc).__name__})"
        finally:
            self._end(conn, reason)
            if conn is self._conn:
                self._reconnect()

    async def _on_event(self, conn: _Connection, event: SseEvent) -> None:
        if event.event == "endpoint":
            if conn.post_url is None:
                try:
                    conn.post_url = self._endpoint(event.data)
                except BackendError as exc:
                    conn.error = exc
                    self._end(conn, "named a bad endpoint")
                conn.ready.set()
            return
        if event.event != "message" or not event.data.strip():
            return
        try:
            decoded = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            log.info("upstream sent invalid JSON on its event stream", upstream=self.name)
            return
        for message in json_messages(decoded):
            await self._on_message(conn, message)

    def _endpoint(self, data: bytes) -> str:
        """The endpoint event's URI, resolved against the stream's URL; same origin only, so
        an upstream cannot send our messages (and configured headers) elsewhere."""
        text = data.decode("utf-8", "replace").strip()
        try:
            target = urljoin(self.url, text)
            same = _origin(urlsplit(target)) == _origin(urlsplit(self.url))
        except ValueError:
            raise BackendError(
                f"upstream {self.name!r} named an invalid endpoint {one_line(text)!r}"
            ) from None
        if not same:
            raise BackendError(
                f"upstream {self.name!r} named an endpoint on another origin: {one_line(text)}"
            )
        return target

    async def _on_message(self, conn: _Connection, message: JSON) -> None:
        method = message.get("method")
        if not isinstance(method, str):
            request_id = message.get("id")
            waiting = conn.pending.get(request_id) if type(request_id) is int else None
            if waiting is not None and not waiting[1].done():
                waiting[1].set_result(message)
            return
        params = params_of(message)
        if "id" in message:
            # Answered from a task of its own: the reader must go on reading meanwhile.
            self._spawn(self._answer(conn, message))
            return
        if method == "notifications/progress":
            token = params.get("progressToken")
            route = conn.progress.get(token) if isinstance(token, str) else None
            if route is not None:
                on_notification, shown, future = route
                try:
                    await on_notification(method, {**params, "progressToken": shown})
                except Exception as exc:
                    # The reader serves every request, so the failure goes to the request
                    # whose handler failed (which is then abandoned), not to the reader.
                    if not future.done():
                        future.set_exception(exc)
            return
        await self._deliver(method, params)

    async def _answer(self, conn: _Connection, message: JSON) -> None:
        try:
            await self._post(conn, server_request_reply(message))
        except (BackendError, aiohttp.ClientError) as exc:
            log.info("could not answer upstream request", upstream=self.name, error=repr(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _origin(url: SplitResult) -> tuple[str, str | None, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.hostname, url.port or {"http": 80, "https": 443}.get(scheme)


def _notification(method: str, params: JSON | None) -> JSON:
    message: JSON = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


# --- registration --------------------------------------------------------------------------


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="mcp-sse",
            transport="sse",
            factory=McpSseBackend,
            description="An upstream MCP server over the legacy HTTP+SSE transport (2024-11-05).",
        )
    )
