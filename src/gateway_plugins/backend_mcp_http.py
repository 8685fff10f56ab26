"""The `streamable-http` backend: one upstream MCP server reached over Streamable HTTP.

Each backend instance (one per upstream per worker) keeps one keep-alive connection
pool and one MCP session, initialised on first use, or as soon as a listener is set (the
gateway's own backends have one, so they listen from the start), and re-initialised
once when the upstream forgets it (HTTP 404); `close()` ends it with DELETE, and fails
the requests still reading their replies with `BackendError`. Every message is a POST,
and a request's reply is a JSON body or an SSE stream. That stream belongs to its request,
so the progress and log notifications in it go to that request's `on_notification` as
they come; params go out as given, so the upstream sends progress when the caller put a
`_meta.progressToken` in them. Other notifications there, like those on the listening
stream, go to the listener. A request the upstream sends its client there
relates to that request and goes to its `on_request`; one on the listening stream relates
to none and goes to the listener's `ask`. Either answer is POSTed with the session's
headers, while the stream it came on goes on being read.
With a listener set, the backend also holds the session's own GET event stream open for the
upstream's notifications, reconnecting with backoff (resuming with `Last-Event-ID`) when it
drops and reopening it for every new session.

What an upstream sends is bounded (`gateway.mcpclient.bounded`): a reply, JSON or event
stream, by `MAX_UPSTREAM_RESPONSE_BYTES` after decompression, and every line of an event
stream by `MAX_SSE_LINE_BYTES`; past either the connection is closed and the request fails
naming the setting. The listening stream lives long, so only its lines and events are
bounded, not its total.

The MCP logic is `gateway.mcpclient`'s; this module only moves the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import aiohttp

from gateway import upstream_oauth
from gateway.mcpclient import (
    CLOSE_TIMEOUT,
    Backoff,
    Call,
    HttpClient,
    HttpLink,
    ListenOutcome,
    SessionState,
    SseParser,
)
from gateway.mcpclient.fasthttp import Response
from gateway.mcpclient.http import HttpStatusError
from gateway.mcpclient.wire import decode_json, json_messages
from gateway.plugin import (
    JSON,
    BackendError,
    BackendSpec,
    Registrar,
    Settings,
    UpstreamConfig,
    hookimpl,
)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
# How long to wait for a reply's event stream to end once the answer is in; see
# `_finish_stream`.
STREAM_END_GRACE = 0.05


class _SessionLink(HttpLink):
    """One Streamable HTTP session: its id and version go out as headers once known."""

    def __init__(self, upstream: str, url: str, headers: Mapping[str, str]) -> None:
        super().__init__(upstream, url, headers)
        self.last_event_id = ""
        """Where the listening stream resumes after a drop."""
        self.replies: dict[Response, str] = {}
        """The reply streams being read, with their request's method."""

    def adopt(self, headers: Mapping[str, str]) -> None:
        session_id = headers.get(SESSION_HEADER)
        if session_id:
            self.session_id = session_id
            self.headers[SESSION_HEADER] = session_id

    def resume(self, state: SessionState) -> None:
        super().resume(state)
        if state.session_id:
            self.headers[SESSION_HEADER] = state.session_id

    def initialised(self, protocol_version: str, capabilities: JSON) -> None:
        super().initialised(protocol_version, capabilities)
        self.headers[VERSION_HEADER] = protocol_version

    def end(self, reason: str) -> None:
        super().end(reason)
        for resp, method in self.replies.items():
            # Nothing else wakes a reader whose upstream keeps its stream open.
            failure = BackendError(
                f"upstream {self.upstream!r} {self.lost} before answering {method}"
            )
            resp.content.set_exception(failure)


class McpHttpBackend(HttpClient[_SessionLink]):
    """A `FullBackend` for one upstream MCP server speaking Streamable HTTP."""

    # 2025-06-18 rather than 2025-11-25: a 2025-11-25 server may close a reply's SSE stream
    # early and expect the client to resume it with GET + Last-Event-ID, which this backend
    # does only for its own listening stream, not for replies.
    protocol_version = "2025-06-18"
    adoptable = True

    def __init__(self, upstream: UpstreamConfig, settings: Settings) -> None:
        super().__init__(upstream, settings)
        self._base_headers: dict[str, str] = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **upstream_oauth.sent_headers(upstream.headers),
        }
        self._await_stream_end = True
        self._own_oauth = upstream_oauth.TokenSource.of(
            self.name, upstream.options, upstream.headers, self._guard
        )
        self.oauth: upstream_oauth.Tokens | None = self._own_oauth
        """Where the upstream's OAuth access token comes from, when its registration has
        `oauth`."""

    def borrow(self, source: upstream_oauth.Tokens) -> None:
        """Use `source` (the shared backend's, or the caller's exchanged token) instead of
        a token of its own."""
        self.oauth = source

    async def close(self) -> None:
        await super().close()
        if self._own_oauth is not None:
            await self._own_oauth.close()

    async def _open(self) -> _SessionLink:
        # Nothing to connect: the session begins with the initialize POST.
        return _SessionLink(self.name, self.url, self._base_headers)

    async def _terminate(self, link: _SessionLink) -> None:
        link.end("was closed")
        if link.session_id is None:
            return
        # Courtesy only (the spec's DELETE): an upstream that is gone must not slow shutdown.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self.oauth is not None:
                    # A session adopted from another worker has sent nothing yet, and one
                    # idle for long holds an expired token: the DELETE gets a current one.
                    with contextlib.suppress(BackendError):
                        link.headers["Authorization"] = await self.oauth.header()
                async with self._client().delete(
                    self.url, headers=link.headers, allow_redirects=False
                ):
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass

    # --- POST: every message, and a request's reply ---

    async def _post(self, link: _SessionLink, message: JSON, call: Call | None) -> None:
        if self.oauth is None:
            return await self._post_once(link, message, call)
        # The link's headers are shared by concurrent calls: remember what this one sent.
        sent = link.headers["Authorization"] = await self.oauth.header()
        try:
            await self._post_once(link, message, call)
        except HttpStatusError as exc:
            if exc.status != 401:
                raise
            # Revoked or expired early: once more with a fresh token.
            link.headers["Authorization"] = await self.oauth.header(sent)
            await self._post_once(link, message, call)

    async def _post_once(self, link: _SessionLink, message: JSON, call: Call | None) -> None:
        async with self._posting(link, message) as resp:
            if call is None:
                return
            if call.method == "initialize":
                link.adopt(resp.headers)
            if resp.content_type == "text/event-stream":
                link.replies[resp] = call.method
                try:
                    await self._read_stream(resp, link, call)
                finally:
                    del link.replies[resp]
            else:
                await self._read_body(resp, link, call)

    async def _read_body(self, resp: Response, link: _SessionLink, call: Call) -> None:
        decoded = decode_json(self.name, await resp.read(), call.method, resp.content_type)
        for message in json_messages(decoded):
            await self._receive(link, message, call)
        if not call.reply.done():
            raise BackendError(
                f"upstream {self.name!r} sent no response to {call.method} (id {call.request_id})"
            )

    async def _read_stream(self, resp: Response, link: _SessionLink, call: Call) -> None:
        parser = SseParser(self.bounds)
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                # Other event types carry no JSON-RPC; an event with empty data only primes
                # a resumable stream.
                if event.event != "message" or not event.data.strip():
                    continue
                for message in json_messages(decode_json(self.name, event.data, call.method)):
                    await self._receive(link, message, call)
                    if call.answered:
                        await self._finish_stream(resp)
                    if call.reply.done():
                        return
        if not call.reply.done():
            raise BackendError(
                f"upstream {self.name!r} ended its event stream without answering {call.method}"
            )

    async def _finish_stream(self, resp: Response) -> None:
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

    # --- GET: the session's listening stream ---

    async def _listen_on(self, link: _SessionLink, backoff: Backoff) -> ListenOutcome:
        headers = {name: value for name, value in link.headers.items() if name != "Content-Type"}
        headers["Accept"] = "text/event-stream"
        if link.last_event_id:
            headers["Last-Event-ID"] = link.last_event_id
        async with asyncio.timeout(self.discovery_timeout):
            resp = await self._client().get(self.url, headers=headers, allow_redirects=False)
        try:
            if resp.status == 405:
                return ListenOutcome.NO_STREAM
            if resp.status == 404 and link.session_id is not None:
                return ListenOutcome.EXPIRED
            await self._check_stream(resp)
            parser = SseParser(self.bounds)
            async for chunk in resp.content.iter_any():
                for event in parser.feed(chunk):
                    backoff.reset()
                    await self._receive_event(link, event)
                link.last_event_id = parser.last_event_id or link.last_event_id
                if parser.retry is not None:
                    backoff.least = parser.retry / 1000
            return ListenOutcome.ENDED
        finally:
            resp.close()


@hookimpl(trylast=True)
def gateway_register_backends(register: Registrar[BackendSpec]) -> None:
    register.add(
        BackendSpec(
            name="streamable-http",
            transport="streamable-http",
            factory=McpHttpBackend,
            description="An upstream MCP server over Streamable HTTP (JSON or SSE replies).",
            fields=frozenset({upstream_oauth.FIELD}),
            check_options=upstream_oauth.check_options,
        )
    )
